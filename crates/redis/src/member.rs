//! What to do next with one local Redis member, decided from what it should be (the
//! replicated record: master of the term or replica, fenced, holding) and what it is
//! (its marker, whether redis-server runs, what it answers). Pure: the node's runner
//! executes the step and asks again.
//!
//! The same terms and lease as PostgreSQL: a member takes writes only as the master of
//! the current term while its node holds the lease. When the lease lapses, writes wait
//! (`CLIENT PAUSE WRITE`); when it is gone, or a switchover fences the master, writes are
//! refused (`min-replicas-to-write` above any replica count; a write that waited is
//! refused when it resumes) and reads go on. A former master rejoins as a replica: Redis
//! resynchronises it from the new master (partially when it holds nothing the new master
//! lacks, else in full, dropping what only it had).

/// What the control plane wants of this member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    /// The database's current term.
    pub term: u64,
    /// This member is the master of `term`.
    pub primary: bool,
    /// It must not take writes now: the node lost its lease long enough that another
    /// master may exist, or a switchover fences it.
    pub fenced: bool,
    /// The node's lease has just lapsed: writes wait, nothing becomes master.
    pub hold: bool,
    /// No other member could take over (a one-member database): a master that lost its
    /// data (no persistence) serves empty rather than not at all.
    pub sole: bool,
}

/// What the member answered, as far as deciding goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub master: bool,
}

/// What the member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Have {
    /// It holds the database's data (the first master, or a replica that synced).
    pub ready: bool,
    /// It last ran as the master of this term (0: a replica).
    pub primary_term: u64,
    /// redis-server runs (the agent has the instance, whatever its health).
    pub running: bool,
    /// Its last probe, when it answered.
    pub answer: Option<Answer>,
    /// Without persistence, the process that held the data is gone: it is empty.
    pub lost_data: bool,
    /// A replica attached, for a while, to another history than the current master's
    /// (still on a former master's connection), or not attached while a master of the
    /// current term answers: it is re-pointed.
    pub following_other: bool,
}

/// The next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The first master of a new database: record it, then run as the master.
    Init,
    /// Run as a replica of the database's replication address (the steady state of a
    /// replica; a member about to be promoted is started this way first).
    Replica,
    /// `REPLICAOF` again (at the other replication port): the replica still follows a
    /// former master, or its link is down while the current master answers.
    Repoint,
    /// Run as the master of the term with writes open.
    Master,
    /// The master of the term while the lease has lapsed: writes wait.
    Hold,
    /// A master that must not take writes: refused; reads go on.
    Fence { why: &'static str },
    /// `REPLICAOF NO ONE`: become the master of `term`.
    Promote { term: u64 },
    /// A master of an older term becomes a replica (fenced first).
    Demote,
    /// Nothing can be done now.
    Wait { why: &'static str },
}

/// Why a master is fenced while its node cannot reach the quorum.
pub const FENCED: &str = "fenced: this node cannot reach the control plane's quorum (or a switchover fences it)";
/// Why a master without persistence that restarted is fenced.
pub const LOST_DATA: &str =
    "redis-server restarted without persistence and holds no data: it takes no writes until another member is promoted";

/// The next step for a member.
pub fn next(want: Want, have: Have) -> Step {
    let answers_master = have.answer.is_some_and(|a| a.master);
    let was_master = have.primary_term > 0;
    let of_term = want.primary && was_master && have.primary_term == want.term;
    if want.hold && !want.fenced && of_term && have.running && !have.lost_data {
        return Step::Hold;
    }
    if want.fenced || want.hold {
        return if was_master || answers_master { Step::Fence { why: FENCED } } else { Step::Replica };
    }
    if want.primary {
        if of_term {
            return if have.lost_data && !want.sole { Step::Fence { why: LOST_DATA } } else { Step::Master };
        }
        if !have.ready {
            return if want.term == 1 && !was_master {
                Step::Init
            } else {
                Step::Wait { why: "this member holds no data and cannot be the master" }
            };
        }
        if !have.running {
            // Started as a replica first, then promoted (its data is what the choice was
            // based on).
            return Step::Replica;
        }
        return match have.answer {
            Some(a) if !a.master => Step::Promote { term: want.term },
            // A master of an older term chosen again: it becomes a replica first.
            Some(_) if was_master => Step::Demote,
            Some(_) => Step::Promote { term: want.term },
            None => Step::Wait { why: "waiting for redis to answer before promoting it" },
        };
    }
    if was_master || answers_master {
        return Step::Demote;
    }
    if have.following_other && have.running {
        return Step::Repoint;
    }
    Step::Replica
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(term: u64, primary: bool) -> Want {
        Want { term, primary, fenced: false, hold: false, sole: false }
    }
    fn fenced(term: u64, primary: bool) -> Want {
        Want { fenced: true, ..want(term, primary) }
    }
    fn held(term: u64, primary: bool) -> Want {
        Want { hold: true, ..want(term, primary) }
    }
    fn have(ready: bool, primary_term: u64, running: bool, master: Option<bool>) -> Have {
        Have {
            ready,
            primary_term,
            running,
            answer: master.map(|master| Answer { master }),
            lost_data: false,
            following_other: false,
        }
    }

    #[test]
    fn steps() {
        let lost = Have { lost_data: true, ..have(true, 1, true, Some(true)) };
        let stray = Have { following_other: true, ..have(true, 0, true, Some(false)) };
        let cases: &[(Want, Have, Step)] = &[
            // A new database: the first master is recorded, replicas start and sync.
            (want(1, true), have(false, 0, false, None), Step::Init),
            (want(1, false), have(false, 0, false, None), Step::Replica),
            // Steady states.
            (want(1, true), have(true, 1, true, Some(true)), Step::Master),
            (want(1, true), have(true, 1, false, None), Step::Master),
            (want(1, false), have(true, 0, true, Some(false)), Step::Replica),
            // Failover: the chosen replica is promoted (started first when it is not).
            (want(2, true), have(true, 0, true, Some(false)), Step::Promote { term: 2 }),
            (want(2, true), have(true, 0, false, None), Step::Replica),
            (
                want(2, true),
                have(true, 0, true, None),
                Step::Wait { why: "waiting for redis to answer before promoting it" },
            ),
            (
                want(3, true),
                have(false, 0, true, Some(false)),
                Step::Wait { why: "this member holds no data and cannot be the master" },
            ),
            // The old master comes back: it becomes a replica, never a master of its term.
            (want(2, false), have(true, 1, true, Some(true)), Step::Demote),
            (want(2, false), have(true, 1, false, None), Step::Demote),
            (want(3, true), have(true, 1, true, Some(true)), Step::Demote),
            // A lapsed lease holds writes; a gone one refuses them, and a replica keeps
            // replicating either way.
            (held(1, true), have(true, 1, true, Some(true)), Step::Hold),
            (held(1, true), have(true, 1, false, None), Step::Fence { why: FENCED }),
            (held(2, true), have(true, 0, true, Some(false)), Step::Replica),
            (held(1, false), have(true, 0, true, Some(false)), Step::Replica),
            (fenced(1, true), have(true, 1, true, Some(true)), Step::Fence { why: FENCED }),
            (Want { hold: true, ..fenced(1, true) }, have(true, 1, true, Some(true)), Step::Fence { why: FENCED }),
            (fenced(1, false), have(true, 0, true, Some(false)), Step::Replica),
            (fenced(2, false), have(true, 1, true, Some(true)), Step::Fence { why: FENCED }),
            // Without persistence a restarted master is empty: fenced until a replica is
            // promoted, unless no other member exists.
            (want(1, true), lost, Step::Fence { why: LOST_DATA }),
            (Want { sole: true, ..want(1, true) }, lost, Step::Master),
            (held(1, true), lost, Step::Fence { why: FENCED }),
            // A replica on a former master's connection is re-pointed.
            (want(2, false), stray, Step::Repoint),
            (want(2, false), Have { running: false, ..stray }, Step::Replica),
        ];
        for (i, (w, h, expected)) in cases.iter().enumerate() {
            assert_eq!(&next(*w, *h), expected, "case {i}: {w:?} {h:?}");
        }
    }
}
