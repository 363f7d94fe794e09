//! Listen-port allocation for instances: ports come from the configured
//! range, skipping ports held by this agent's instances and ports that fail a
//! bind test on 127.0.0.1.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use crate::error::AgentError;

/// Tracks which ports of the range this agent's instances hold.
#[derive(Debug)]
pub(crate) struct PortAllocator {
    range: Range<u16>,
    held: BTreeSet<u16>,
    /// Next port to try; rotates through the range so a just-released port is
    /// not handed out again at once.
    cursor: u16,
}

/// True if a TCP listener can be bound on 127.0.0.1:`port` right now.
pub(crate) fn bind_test(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

impl PortAllocator {
    /// `seed` picks the starting point inside the range (so several agents
    /// on one machine, e.g. in tests, do not all start at the same port).
    pub(crate) fn new(range: Range<u16>, seed: u64) -> Self {
        let len = range.end.saturating_sub(range.start);
        let cursor = if len == 0 { range.start } else { range.start + (seed % u64::from(len)) as u16 };
        Self { range, held: BTreeSet::new(), cursor }
    }

    /// Marks `port` as held (an adopted instance keeps its ports).
    pub(crate) fn hold(&mut self, port: u16) {
        self.held.insert(port);
    }

    pub(crate) fn release<'a>(&mut self, ports: impl IntoIterator<Item = &'a u16>) {
        for p in ports {
            self.held.remove(p);
        }
    }

    /// Allocates one port per distinct name. `previous` are the ports the
    /// instance had before (they are released first and reused when still
    /// free, so an instance keeps its ports across restarts). `is_free` is the
    /// bind test. On error nothing is held (not even `previous`).
    pub(crate) fn allocate(
        &mut self,
        names: &[String],
        previous: &BTreeMap<String, u16>,
        mut is_free: impl FnMut(u16) -> bool,
    ) -> Result<BTreeMap<String, u16>, AgentError> {
        self.release(previous.values());
        let mut out = BTreeMap::new();
        for name in names {
            if out.contains_key(name) {
                continue;
            }
            let port = match previous.get(name) {
                Some(&p) if self.range.contains(&p) && !self.held.contains(&p) && is_free(p) => p,
                _ => match self.next_free(&mut is_free) {
                    Some(p) => p,
                    None => {
                        self.release(out.values());
                        return Err(AgentError::NoFreePort {
                            start: self.range.start,
                            end: self.range.end,
                            needed: names.len(),
                        });
                    }
                },
            };
            self.held.insert(port);
            out.insert(name.clone(), port);
        }
        Ok(out)
    }

    fn next_free(&mut self, is_free: &mut impl FnMut(u16) -> bool) -> Option<u16> {
        let len = self.range.end.saturating_sub(self.range.start);
        for _ in 0..len {
            let p = self.cursor;
            self.cursor = if p + 1 >= self.range.end { self.range.start } else { p + 1 };
            if !self.held.contains(&p) && is_free(p) {
                return Some(p);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn allocates_distinct_ports_and_skips_held_and_busy() {
        let mut a = PortAllocator::new(100..110, 0);
        let p1 = a.allocate(&names(&["http", "admin"]), &BTreeMap::new(), |_| true).expect("alloc");
        assert_eq!(p1["http"], 100);
        assert_eq!(p1["admin"], 101);
        // 102 fails the bind test, so the next instance gets 103.
        let p2 = a.allocate(&names(&["http"]), &BTreeMap::new(), |p| p != 102).expect("alloc");
        assert_eq!(p2["http"], 103);
    }

    #[test]
    fn duplicate_names_get_one_port() {
        let mut a = PortAllocator::new(100..110, 0);
        let p = a.allocate(&names(&["http", "http"]), &BTreeMap::new(), |_| true).expect("alloc");
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn keeps_previous_ports_when_still_free_otherwise_moves() {
        let mut a = PortAllocator::new(100..110, 5);
        let first = a.allocate(&names(&["http", "metrics"]), &BTreeMap::new(), |_| true).expect("alloc");
        assert_eq!(first["http"], 105);
        assert_eq!(first["metrics"], 106);
        let again = a.allocate(&names(&["http", "metrics"]), &first, |_| true).expect("alloc");
        assert_eq!(again, first);
        // metrics' port is now taken by someone else: only it moves.
        let moved = a.allocate(&names(&["http", "metrics"]), &again, |p| p != 106).expect("alloc");
        assert_eq!(moved["http"], 105);
        assert_ne!(moved["metrics"], 106);
    }

    #[test]
    fn wraps_around_and_reports_exhaustion() {
        let mut a = PortAllocator::new(100..103, 2);
        let p = a.allocate(&names(&["a", "b", "c"]), &BTreeMap::new(), |_| true).expect("alloc");
        let got: BTreeSet<u16> = p.values().copied().collect();
        assert_eq!(got, BTreeSet::from([100, 101, 102]));
        let err = a.allocate(&names(&["d"]), &BTreeMap::new(), |_| true).expect_err("range is full");
        assert!(matches!(err, AgentError::NoFreePort { needed: 1, .. }));
        // Releasing makes the port available again.
        a.release(p.get("b"));
        let q = a.allocate(&names(&["d"]), &BTreeMap::new(), |_| true).expect("alloc");
        assert_eq!(q["d"], p["b"]);
    }

    #[test]
    fn failed_allocation_holds_nothing() {
        let mut a = PortAllocator::new(100..102, 0);
        let err = a.allocate(&names(&["a", "b", "c"]), &BTreeMap::new(), |_| true);
        assert!(err.is_err());
        let ok = a.allocate(&names(&["x", "y"]), &BTreeMap::new(), |_| true).expect("alloc");
        assert_eq!(ok.len(), 2);
    }

    #[test]
    fn adopted_ports_are_held() {
        let mut a = PortAllocator::new(100..102, 0);
        a.hold(100);
        let p = a.allocate(&names(&["a"]), &BTreeMap::new(), |_| true).expect("alloc");
        assert_eq!(p["a"], 101);
    }

    #[test]
    fn empty_range() {
        let mut a = PortAllocator::new(100..100, 7);
        assert!(a.allocate(&names(&["a"]), &BTreeMap::new(), |_| true).is_err());
        assert!(a.allocate(&[], &BTreeMap::new(), |_| true).is_ok());
    }

    #[test]
    fn real_bind_test_detects_a_listener() {
        let l = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        let port = l.local_addr().expect("addr").port();
        assert!(!bind_test(port));
        drop(l);
    }
}
