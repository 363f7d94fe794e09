//! This node's lease: whether it can reach the control plane's quorum right now *with a
//! current state*, the condition for serving as a database primary and for forwarding
//! writes to one.
//!
//! A follower renews it with every heartbeat the leader answers, dated when the heartbeat
//! was *sent* (so the lease never outlives the leader's view by more than the round
//! trip), and only once its own state has reached the revision the leader had when it
//! answered: a node thawed after a freeze hears the leader at once, but must not count
//! that as a lease while its state still names it primary of a term the leader has moved
//! past. The leader renews it from Raft's last quorum acknowledgement. The leader
//! promotes a new primary only after `db_lease_ms` without hearing from the old one's
//! node, while that node makes its primary hold every commit after `db_lease_ms -
//! FENCE_MARGIN` without a renewal (the margin is the time it has to do so), and stops
//! it after `2 × db_lease_ms - FENCE_MARGIN` ([`Standing`]). The hold keeps a primary
//! whose node only lost the leader for an election (the leader's machine died) running
//! with its connections: its held commits complete the moment a new leader renews the
//! lease, where a stop would have cost a restart and every client's connection.
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How much earlier than the leader's wait a node fences itself.
pub const FENCE_MARGIN: Duration = Duration::from_millis(500);

/// Where the lease stands, as a database primary on this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Renewed within `db_lease - FENCE_MARGIN`: the primary takes writes.
    Held,
    /// Lapsed, but within `2 × db_lease - FENCE_MARGIN` of the last renewal: another
    /// primary may be promoted from `db_lease` on, so the primary holds every commit
    /// (none is acknowledged) until a renewal comes; it keeps running.
    Lapsed,
    /// Lapsed longer (or never renewed): the primary is stopped.
    Gone,
}

/// How many renewals may wait for the state to catch up.
const PENDING: usize = 16;

/// The lease clock of one node.
#[derive(Debug)]
pub struct Lease {
    epoch: Instant,
    /// Milliseconds after `epoch` of the last renewal (0: never).
    renewed_ms: AtomicU64,
    /// Renewals still waiting for this node's state to reach the leader's revision:
    /// (milliseconds after `epoch`, revision), oldest first, at most [`PENDING`] (under
    /// steady churn each answer names a newer revision: an older renewal that is reached
    /// still counts).
    pending: Mutex<VecDeque<(u64, u64)>>,
}

impl Default for Lease {
    fn default() -> Self {
        Lease { epoch: Instant::now(), renewed_ms: AtomicU64::new(0), pending: Mutex::default() }
    }
}

impl Lease {
    /// Renews the lease as of `at` (never moves it back). For the leader, whose state is
    /// the committed one.
    pub fn renew(&self, at: Instant) {
        self.renewed_ms.fetch_max(self.ms(at), Ordering::SeqCst);
    }

    /// Renews the lease as of `at` once this node's state reaches `revision` (the
    /// leader's when it answered); `local` is this node's revision now.
    pub fn renew_at_revision(&self, at: Instant, revision: u64, local: u64) {
        if local >= revision {
            self.renew(at);
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let ms = self.ms(at);
        if pending.back().is_none_or(|(m, _)| *m < ms) {
            if pending.len() == PENDING {
                pending.pop_front();
            }
            pending.push_back((ms, revision));
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64 + 1
    }

    /// Applies the pending renewal once `local` (this node's revision) has reached it.
    fn catch_up(&self, local: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((ms, _)) = pending.front().copied().filter(|(_, revision)| local >= *revision) {
            self.renewed_ms.fetch_max(ms, Ordering::SeqCst);
            pending.pop_front();
        }
    }

    /// Time since the last renewal that counts at revision `local` (`None`: never
    /// renewed).
    pub fn age(&self, local: u64) -> Option<Duration> {
        self.catch_up(local);
        match self.renewed_ms.load(Ordering::SeqCst) {
            0 => None,
            ms => Some(self.epoch.elapsed().saturating_sub(Duration::from_millis(ms - 1))),
        }
    }

    /// Held at revision `local`: renewed within `db_lease - FENCE_MARGIN`.
    pub fn held(&self, db_lease: Duration, local: u64) -> bool {
        self.standing(db_lease, local) == Standing::Held
    }

    /// Where the lease stands at revision `local` (see [`Standing`]).
    pub fn standing(&self, db_lease: Duration, local: u64) -> Standing {
        let Some(age) = self.age(local) else { return Standing::Gone };
        let [lapses, goes] = edges(db_lease);
        if age < lapses {
            Standing::Held
        } else if age < goes {
            Standing::Lapsed
        } else {
            Standing::Gone
        }
    }

    /// How long until the standing changes without another renewal (`None`: it is
    /// [`Standing::Gone`] and stays so).
    pub fn changes_in(&self, db_lease: Duration, local: u64) -> Option<Duration> {
        let age = self.age(local)?;
        edges(db_lease).into_iter().find_map(|edge| edge.checked_sub(age).filter(|left| !left.is_zero()))
    }
}

/// The ages at which a lease lapses and is gone (see [`Standing`]).
fn edges(db_lease: Duration) -> [Duration; 2] {
    [db_lease.saturating_sub(FENCE_MARGIN), (db_lease * 2).saturating_sub(FENCE_MARGIN)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_until_the_margin_before_the_leaders_wait() {
        let Some(epoch) = Instant::now().checked_sub(Duration::from_secs(5)) else { return };
        let l = Lease { epoch, renewed_ms: AtomicU64::new(0), pending: Mutex::default() };
        let lease = Duration::from_millis(1500);
        assert!(!l.held(lease, 0), "never renewed: not held");
        l.renew(Instant::now() - Duration::from_millis(1200));
        assert!(!l.held(lease, 0), "1.2 s old is past 1.5 s - 0.5 s");
        l.renew(Instant::now() - Duration::from_millis(600));
        assert!(l.held(lease, 0), "0.6 s old is within it");
        l.renew(Instant::now() - Duration::from_millis(3000));
        assert!(l.held(lease, 0), "a renewal never moves the lease back");
    }

    #[test]
    fn a_lapsed_lease_holds_commits_before_it_is_gone() {
        let Some(epoch) = Instant::now().checked_sub(Duration::from_secs(10)) else { return };
        let l = Lease { epoch, renewed_ms: AtomicU64::new(0), pending: Mutex::default() };
        let lease = Duration::from_millis(1500);
        assert_eq!(l.standing(lease, 0), Standing::Gone, "never renewed");
        assert_eq!(l.changes_in(lease, 0), None);
        l.renew(Instant::now() - Duration::from_millis(200));
        assert_eq!(l.standing(lease, 0), Standing::Held);
        let left = l.changes_in(lease, 0).expect("it lapses");
        assert!(left <= Duration::from_millis(800) && left > Duration::from_millis(700), "{left:?}");
        l.renew(Instant::now() - Duration::from_millis(1800));
        assert_eq!(l.standing(lease, 0), Standing::Held, "never moves back");
        let l = Lease { epoch, renewed_ms: AtomicU64::new(0), pending: Mutex::default() };
        l.renew(Instant::now() - Duration::from_millis(1800));
        assert_eq!(l.standing(lease, 0), Standing::Lapsed, "1.8 s: past 1.0 s, before 2.5 s");
        let left = l.changes_in(lease, 0).expect("it goes");
        assert!(left <= Duration::from_millis(700) && left > Duration::from_millis(600), "{left:?}");
        l.renew(Instant::now() - Duration::from_millis(2600));
        let l2 = Lease { epoch, renewed_ms: AtomicU64::new(0), pending: Mutex::default() };
        l2.renew(Instant::now() - Duration::from_millis(2600));
        assert_eq!(l2.standing(lease, 0), Standing::Gone, "2.6 s: gone");
        assert_eq!(l2.changes_in(lease, 0), None);
    }

    #[test]
    fn a_renewal_counts_only_once_the_state_reaches_the_leaders_revision() {
        let Some(epoch) = Instant::now().checked_sub(Duration::from_secs(20)) else { return };
        let l = Lease { epoch, renewed_ms: AtomicU64::new(0), pending: Mutex::default() };
        let lease = Duration::from_millis(1500);
        l.renew_at_revision(Instant::now() - Duration::from_secs(10), 5, 5);
        assert!(!l.held(lease, 5), "10 s old (a thawed node)");
        // The leader answers at revision 9 (it promoted another primary meanwhile).
        l.renew_at_revision(Instant::now(), 9, 7);
        assert!(!l.held(lease, 7), "the state at 7 still names the old term: not held");
        assert!(!l.held(lease, 8), "8 is not 9 yet");
        assert!(l.held(lease, 9), "caught up: the renewal counts");
        assert!(l.held(lease, 9), "and keeps counting");
        l.renew_at_revision(Instant::now() - Duration::from_secs(5), 12, 9);
        assert!(l.held(lease, 12), "an older pending renewal never moves the lease back");
    }

    #[test]
    fn under_churn_an_older_renewal_that_is_reached_counts() {
        let Some(epoch) = Instant::now().checked_sub(Duration::from_secs(20)) else { return };
        let l = Lease { epoch, renewed_ms: AtomicU64::new(0), pending: Mutex::default() };
        let lease = Duration::from_millis(1500);
        // Each answer names a newer revision than the node has applied yet.
        l.renew_at_revision(Instant::now() - Duration::from_millis(400), 10, 9);
        l.renew_at_revision(Instant::now() - Duration::from_millis(200), 11, 10);
        assert!(l.held(lease, 10), "the first answer's revision is reached");
        l.renew_at_revision(Instant::now(), 12, 11);
        assert!(l.held(lease, 11));
    }
}
