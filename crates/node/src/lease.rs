//! This node's lease: whether it can reach the control plane's quorum right now, the
//! condition for serving as a database primary and for forwarding writes to one.
//!
//! A follower renews it with every heartbeat the leader answers, dated when the heartbeat
//! was *sent* (so the lease never outlives the leader's view by more than the
//! round trip); the leader renews it from Raft's last quorum acknowledgement. The leader
//! promotes a new primary only after `db_lease_ms` without hearing from the old one's
//! node, while that node stops its primary after `db_lease_ms - FENCE_MARGIN` without a
//! renewal: the margin is the time it has to stop PostgreSQL.
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How much earlier than the leader's wait a node fences itself.
pub const FENCE_MARGIN: Duration = Duration::from_millis(500);

/// The lease clock of one node.
#[derive(Debug)]
pub struct Lease {
    epoch: Instant,
    /// Milliseconds after `epoch` of the last renewal (0: never).
    renewed_ms: AtomicU64,
}

impl Default for Lease {
    fn default() -> Self {
        Lease { epoch: Instant::now(), renewed_ms: AtomicU64::new(0) }
    }
}

impl Lease {
    /// Renews the lease as of `at` (never moves it back).
    pub fn renew(&self, at: Instant) {
        let ms = at.saturating_duration_since(self.epoch).as_millis() as u64 + 1;
        self.renewed_ms.fetch_max(ms, Ordering::SeqCst);
    }

    /// Time since the last renewal (`None`: never renewed).
    pub fn age(&self) -> Option<Duration> {
        match self.renewed_ms.load(Ordering::SeqCst) {
            0 => None,
            ms => Some(self.epoch.elapsed().saturating_sub(Duration::from_millis(ms - 1))),
        }
    }

    /// Held: renewed within `db_lease - FENCE_MARGIN`.
    pub fn held(&self, db_lease: Duration) -> bool {
        self.age().is_some_and(|age| age < db_lease.saturating_sub(FENCE_MARGIN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_until_the_margin_before_the_leaders_wait() {
        let Some(epoch) = Instant::now().checked_sub(Duration::from_secs(5)) else { return };
        let l = Lease { epoch, renewed_ms: AtomicU64::new(0) };
        let lease = Duration::from_millis(1500);
        assert!(!l.held(lease), "never renewed: not held");
        l.renew(Instant::now() - Duration::from_millis(1200));
        assert!(!l.held(lease), "1.2 s old is past 1.5 s - 0.5 s");
        l.renew(Instant::now() - Duration::from_millis(600));
        assert!(l.held(lease), "0.6 s old is within it");
        l.renew(Instant::now() - Duration::from_millis(3000));
        assert!(l.held(lease), "a renewal never moves the lease back");
    }
}
