//! What to do next with one local member, decided from what it should be (the
//! replicated record: primary of the term or replica, fenced or not) and what it is
//! (its directory's marker, whether postgres runs, what it answers). Pure: the node's
//! runner executes the step and asks again.
use crate::admin::Probe;
use crate::datadir::Marker;

/// What the control plane wants of this member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    /// The database's current term.
    pub term: u64,
    /// This member is the primary of `term`.
    pub primary: bool,
    /// It must not run as a writable primary now: the node lost its lease (it cannot
    /// reach the control plane's quorum) long enough that another primary may exist, or
    /// a switchover is fencing it.
    pub fenced: bool,
    /// The node's lease has just lapsed (e.g. the Raft leader's machine died and an
    /// election is under way): a running primary of the current term keeps running but
    /// holds every commit ([`Step::Hold`]); nothing else may become primary meanwhile.
    pub hold: bool,
    /// The leader asks this member to restart (one at a time: settings changed that
    /// need a restart); it does if its postgres says a setting waits for one.
    pub restart: bool,
}

/// What the member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Have {
    pub marker: MarkerView,
    /// The data directory exists (complete or not).
    pub data_exists: bool,
    /// postgres is running (the agent has the instance, whatever its health).
    pub running: bool,
    /// Its last probe, when it answered.
    pub probe: Option<Probe>,
    /// The replica cannot follow the primary: postgres fails to start again and again
    /// (e.g. "requested timeline N is not a child of this server's history"), or it
    /// answers but has not streamed for long while the primary is up (its WAL went past
    /// the point the new timeline forked at). It is rewound (re-cloned if that fails).
    pub diverged: bool,
}

/// The marker's fields the decision needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MarkerView {
    pub ready: bool,
    pub primary_term: u64,
}

impl From<&Marker> for MarkerView {
    fn from(m: &Marker) -> Self {
        MarkerView { ready: m.ready, primary_term: m.primary_term }
    }
}

/// The next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `initdb` a new cluster (the first primary of a database).
    Init,
    /// Wipe any partial data and clone the primary with `pg_basebackup`.
    Clone,
    /// Run postgres (as a standby when `standby`): write the configuration and hand the
    /// instance to the agent. Also the steady state: the runner keeps it so.
    Run { standby: bool },
    /// Keep the running primary running with every commit held: none is acknowledged
    /// until the lease is renewed (the runner makes `synchronous_standby_names` name a
    /// standby that does not exist, and restores it when the lease comes back).
    Hold,
    /// Stop postgres (fast shutdown): fencing, or before a rewind.
    Stop { why: &'static str },
    /// `pg_rewind` the stopped former primary onto the current primary's timeline.
    Rewind,
    /// `pg_promote()` the running standby: it becomes the primary of `term`.
    Promote { term: u64 },
    /// Nothing can be done now.
    Wait { why: &'static str },
}

/// Why a member stops when the leader asks it to restart.
pub const RESTART: &str = "restarting: settings changed that take effect only after a restart";

/// The next step for a member.
pub fn next(want: Want, have: Have) -> Step {
    let was_primary = have.marker.primary_term > 0;
    let answers_as_primary = have.probe.is_some_and(|p| !p.in_recovery);
    let primary_of_term = want.primary && have.running && have.marker.primary_term == want.term;
    if want.hold && !want.fenced && primary_of_term && have.marker.ready && !have.diverged {
        return Step::Hold;
    }
    if want.fenced || want.hold {
        return if have.running && (was_primary || answers_as_primary) {
            Step::Stop { why: "fenced: this node cannot reach the control plane's quorum (or a switchover fences it)" }
        } else if have.running {
            Step::Run { standby: true }
        } else if was_primary {
            Step::Wait { why: "fenced" }
        } else if have.marker.ready {
            Step::Run { standby: true }
        } else {
            Step::Wait { why: "fenced" }
        };
    }
    if !have.marker.ready {
        return if want.primary && want.term == 1 {
            if have.data_exists {
                // An initdb that did not finish: start over.
                Step::Clone
            } else {
                Step::Init
            }
        } else if want.primary {
            Step::Wait { why: "this member holds no data and cannot be the primary" }
        } else {
            Step::Clone
        };
    }
    if want.restart && have.running && have.probe.is_some_and(|p| p.pending_restart) && !have.diverged {
        return Step::Stop { why: RESTART };
    }
    if have.diverged && !want.primary {
        return if have.running {
            Step::Stop { why: "this replica cannot follow the primary: stopping it to rewind it onto the primary" }
        } else {
            Step::Rewind
        };
    }
    if want.primary {
        if have.marker.primary_term == want.term {
            return Step::Run { standby: false };
        }
        if !have.running {
            // A replica chosen as primary that is not running: start it as a standby
            // first, then promote (its data is what the choice was based on).
            return Step::Run { standby: true };
        }
        return match have.probe {
            Some(p) if p.in_recovery => Step::Promote { term: want.term },
            Some(_) if was_primary => {
                Step::Wait { why: "a primary of an older term must be rewound before it leads again" }
            }
            Some(_) => Step::Promote { term: want.term },
            None => Step::Wait { why: "waiting for postgres to answer before promoting it" },
        };
    }
    // A replica.
    if was_primary {
        return if have.running {
            Step::Stop { why: "a former primary stops before it rejoins as a replica" }
        } else {
            Step::Rewind
        };
    }
    Step::Run { standby: true }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(in_recovery: bool) -> Option<Probe> {
        Some(Probe {
            in_recovery,
            timeline: 1,
            lsn: 100,
            replay_lsn: 100,
            streaming: in_recovery,
            pending_restart: false,
        })
    }
    fn have(ready: bool, primary_term: u64, running: bool, probe: Option<Probe>) -> Have {
        Have { marker: MarkerView { ready, primary_term }, data_exists: ready, running, probe, diverged: false }
    }
    fn want(term: u64, primary: bool, fenced: bool) -> Want {
        Want { term, primary, fenced, hold: false, restart: false }
    }
    fn held(term: u64, primary: bool) -> Want {
        Want { term, primary, fenced: false, hold: true, restart: false }
    }
    fn restart(term: u64, primary: bool) -> Want {
        Want { restart: true, ..want(term, primary, false) }
    }
    fn pending(in_recovery: bool) -> Option<Probe> {
        probe(in_recovery).map(|p| Probe { pending_restart: true, ..p })
    }

    #[test]
    fn steps() {
        let cases: &[(Want, Have, Step)] = &[
            // A new database: the first primary is initialised, replicas clone it.
            (want(1, true, false), have(false, 0, false, None), Step::Init),
            (want(1, false, false), have(false, 0, false, None), Step::Clone),
            // Steady states.
            (want(1, true, false), have(true, 1, true, probe(false)), Step::Run { standby: false }),
            (want(1, false, false), have(true, 0, true, probe(true)), Step::Run { standby: true }),
            // Failover: the chosen replica is promoted (started first if it is not running).
            (want(2, true, false), have(true, 0, true, probe(true)), Step::Promote { term: 2 }),
            (want(2, true, false), have(true, 0, false, None), Step::Run { standby: true }),
            (
                want(2, true, false),
                have(true, 0, true, None),
                Step::Wait { why: "waiting for postgres to answer before promoting it" },
            ),
            // The old primary comes back: stop, rewind, then run as a standby.
            (
                want(2, false, false),
                have(true, 1, true, probe(false)),
                Step::Stop { why: "a former primary stops before it rejoins as a replica" },
            ),
            (want(2, false, false), have(true, 1, false, None), Step::Rewind),
            // Fencing stops a primary at once and keeps it stopped; a standby keeps running.
            (
                want(1, true, true),
                have(true, 1, true, probe(false)),
                Step::Stop {
                    why: "fenced: this node cannot reach the control plane's quorum (or a switchover fences it)",
                },
            ),
            (want(1, true, true), have(true, 1, false, None), Step::Wait { why: "fenced" }),
            (want(1, false, true), have(true, 0, true, probe(true)), Step::Run { standby: true }),
            // A lapsed lease holds the running primary's commits; it starts, promotes or
            // runs as primary nothing else, and a fence stops even a holding primary.
            (held(1, true), have(true, 1, true, probe(false)), Step::Hold),
            (held(1, true), have(true, 1, true, None), Step::Hold),
            (held(1, true), have(true, 1, false, None), Step::Wait { why: "fenced" }),
            (held(2, true), have(true, 0, true, probe(true)), Step::Run { standby: true }),
            (
                held(2, true),
                have(true, 1, true, probe(false)),
                Step::Stop {
                    why: "fenced: this node cannot reach the control plane's quorum (or a switchover fences it)",
                },
            ),
            (held(1, false), have(true, 0, true, probe(true)), Step::Run { standby: true }),
            (
                Want { term: 1, primary: true, fenced: true, hold: true, restart: false },
                have(true, 1, true, probe(false)),
                Step::Stop {
                    why: "fenced: this node cannot reach the control plane's quorum (or a switchover fences it)",
                },
            ),
            // Asked to restart: a member whose postgres waits for a restart stops, then
            // runs again (as what it was); one that already restarted just runs; a fence
            // or a held lease comes first.
            (restart(1, false), have(true, 0, true, pending(true)), Step::Stop { why: RESTART }),
            (restart(1, false), have(true, 0, false, None), Step::Run { standby: true }),
            (restart(1, false), have(true, 0, true, probe(true)), Step::Run { standby: true }),
            (restart(1, true), have(true, 1, true, pending(false)), Step::Stop { why: RESTART }),
            (restart(1, true), have(true, 1, false, None), Step::Run { standby: false }),
            (want(1, false, false), have(true, 0, true, pending(true)), Step::Run { standby: true }),
            (held(1, true), have(true, 1, true, pending(false)), Step::Hold),
            // A member without data is never primary.
            (
                want(3, true, false),
                have(false, 0, false, None),
                Step::Wait { why: "this member holds no data and cannot be the primary" },
            ),
        ];
        let diverged = |running| Have { diverged: true, ..have(true, 0, running, None) };
        let more = [
            (
                want(3, false, false),
                diverged(true),
                Step::Stop { why: "this replica cannot follow the primary: stopping it to rewind it onto the primary" },
            ),
            (want(3, false, false), diverged(false), Step::Rewind),
            (want(3, true, false), diverged(false), Step::Run { standby: true }),
        ];
        let cases = [cases, &more[..]].concat();
        for (i, (w, h, expected)) in cases.iter().enumerate() {
            assert_eq!(&next(*w, *h), expected, "case {i}: {w:?} {h:?}");
        }
    }
}
