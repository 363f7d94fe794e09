//! Usage history (pure): per instance, a fixed-size ring of CPU and memory samples
//! (`holdfast top`, the dashboard's charts). The node samples every [`SAMPLE_EVERY_MS`]
//! and keeps [`WINDOW_MS`] of history, so memory is bounded by the number of instances
//! (about 9 KiB each); an instance that stopped is forgotten once its last sample is
//! older than the window. CPU is a rate between two readings of a cumulative counter: a
//! counter that went backwards (a restart, a new cgroup) starts a new baseline.

use std::collections::{BTreeMap, VecDeque};

/// How often the node samples.
pub const SAMPLE_EVERY_MS: u64 = 10_000;
/// How much history is kept.
pub const WINDOW_MS: u64 = 3_600_000;

/// One reading of an instance's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// Cumulative CPU time (ns), when known.
    pub cpu_ns: Option<u64>,
    /// Memory in use (bytes), when known.
    pub memory_bytes: Option<u64>,
}

/// One sample: CPU in millicores averaged since the previous reading, memory at the
/// reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub at_ms: u64,
    pub cpu_millis: Option<u32>,
    pub memory_bytes: Option<u64>,
}

/// Average and peaks over an instance's kept samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub cpu_avg_millis: Option<u32>,
    pub cpu_peak_millis: Option<u32>,
    pub memory_peak_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default)]
struct Ring {
    samples: VecDeque<Sample>,
    /// The last cumulative CPU reading and when it was taken.
    baseline: Option<(u64, u64)>,
}

/// Every instance's ring, keyed by instance name (`web-0`).
#[derive(Debug, Clone)]
pub struct UsageHistory {
    capacity: usize,
    window_ms: u64,
    rings: BTreeMap<String, Ring>,
}

impl Default for UsageHistory {
    fn default() -> Self {
        Self::new(SAMPLE_EVERY_MS, WINDOW_MS)
    }
}

/// Millicores used between two cumulative CPU readings, or `None` when the counter
/// went backwards or no time passed.
fn rate(prev: (u64, u64), now: (u64, u64)) -> Option<u32> {
    let (prev_ns, prev_ms) = prev;
    let (now_ns, now_ms) = now;
    let dt_ms = now_ms.checked_sub(prev_ms).filter(|d| *d > 0)?;
    let used_ns = now_ns.checked_sub(prev_ns)?;
    // 1 core = 1e6 ns of CPU per ms of wall time = 1000 millicores.
    u32::try_from(used_ns / dt_ms / 1000).ok()
}

impl UsageHistory {
    /// A history sampled every `every_ms`, keeping `window_ms`.
    pub fn new(every_ms: u64, window_ms: u64) -> Self {
        let capacity = usize::try_from(window_ms / every_ms.max(1)).unwrap_or(usize::MAX).max(1);
        Self { capacity, window_ms, rings: BTreeMap::new() }
    }

    /// How many samples a ring holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Records one reading per running instance at `at_ms`, and forgets instances whose
    /// newest sample left the window.
    pub fn record(&mut self, at_ms: u64, readings: &[(String, Reading)]) {
        for (name, r) in readings {
            let ring = self.rings.entry(name.clone()).or_default();
            let cpu_millis = match (ring.baseline, r.cpu_ns) {
                (Some(prev), Some(ns)) => rate(prev, (ns, at_ms)),
                _ => None,
            };
            ring.baseline = r.cpu_ns.map(|ns| (ns, at_ms));
            if ring.samples.len() == self.capacity {
                ring.samples.pop_front();
            }
            ring.samples.push_back(Sample { at_ms, cpu_millis, memory_bytes: r.memory_bytes });
        }
        let horizon = at_ms.saturating_sub(self.window_ms);
        self.rings.retain(|_, ring| ring.samples.back().is_some_and(|s| s.at_ms >= horizon));
    }

    /// The instance's samples, oldest first.
    pub fn samples(&self, name: &str) -> Vec<Sample> {
        self.rings.get(name).map(|r| r.samples.iter().copied().collect()).unwrap_or_default()
    }

    /// The instance's CPU now: the rate since its last sample when that was long enough
    /// ago to mean something (≥ 1 s), else the last sample's.
    pub fn cpu_now(&self, name: &str, at_ms: u64, cpu_ns: Option<u64>) -> Option<u32> {
        let ring = self.rings.get(name)?;
        let last = ring.samples.back().and_then(|s| s.cpu_millis);
        match (ring.baseline, cpu_ns) {
            (Some(prev), Some(ns)) if at_ms >= prev.1 + 1000 => rate(prev, (ns, at_ms)).or(last),
            _ => last,
        }
    }

    /// Average and peaks over the instance's kept samples.
    pub fn summary(&self, name: &str) -> Summary {
        let Some(ring) = self.rings.get(name) else { return Summary::default() };
        let cpu: Vec<u32> = ring.samples.iter().filter_map(|s| s.cpu_millis).collect();
        let cpu_avg_millis = if cpu.is_empty() {
            None
        } else {
            u32::try_from(cpu.iter().map(|c| u64::from(*c)).sum::<u64>() / cpu.len() as u64).ok()
        };
        Summary {
            cpu_avg_millis,
            cpu_peak_millis: cpu.iter().copied().max(),
            memory_peak_bytes: ring.samples.iter().filter_map(|s| s.memory_bytes).max(),
        }
    }

    /// Instances with a ring.
    pub fn instances(&self) -> impl Iterator<Item = &str> {
        self.rings.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(cpu_ns: Option<u64>, mem: Option<u64>) -> Reading {
        Reading { cpu_ns, memory_bytes: mem }
    }

    fn one(name: &str, reading: Reading) -> Vec<(String, Reading)> {
        vec![(name.to_string(), reading)]
    }

    #[test]
    fn cpu_is_a_rate_between_readings_and_a_counter_reset_starts_again() {
        let mut h = UsageHistory::new(10_000, 60_000);
        h.record(0, &one("web-0", r(Some(0), Some(100))));
        // 5 s of CPU in 10 s of wall time: half a core.
        h.record(10_000, &one("web-0", r(Some(5_000_000_000), Some(200))));
        // The counter went backwards (a restart): no rate, a new baseline.
        h.record(20_000, &one("web-0", r(Some(1_000_000), Some(50))));
        // 2 s in 10 s: 200 millicores.
        h.record(30_000, &one("web-0", r(Some(2_001_000_000), None)));
        assert_eq!(
            h.samples("web-0"),
            vec![
                Sample { at_ms: 0, cpu_millis: None, memory_bytes: Some(100) },
                Sample { at_ms: 10_000, cpu_millis: Some(500), memory_bytes: Some(200) },
                Sample { at_ms: 20_000, cpu_millis: None, memory_bytes: Some(50) },
                Sample { at_ms: 30_000, cpu_millis: Some(200), memory_bytes: None },
            ]
        );
        assert_eq!(
            h.summary("web-0"),
            Summary { cpu_avg_millis: Some(350), cpu_peak_millis: Some(500), memory_peak_bytes: Some(200) }
        );
    }

    #[test]
    fn rings_are_bounded_and_stopped_instances_are_forgotten_after_the_window() {
        let mut h = UsageHistory::new(10_000, 30_000);
        assert_eq!(h.capacity(), 3);
        for i in 0..10u64 {
            let mut readings = one("web-0", r(Some(i * 1_000_000_000), Some(i)));
            if i < 2 {
                readings.push(("old-0".to_string(), r(None, Some(1))));
            }
            h.record(i * 10_000, &readings);
        }
        let s = h.samples("web-0");
        assert_eq!(s.iter().map(|s| s.at_ms).collect::<Vec<_>>(), vec![70_000, 80_000, 90_000]);
        assert!(s.iter().all(|s| s.cpu_millis == Some(100)));
        // old-0's last sample (10 s) is older than 90 s - 30 s.
        assert_eq!(h.instances().collect::<Vec<_>>(), vec!["web-0"]);
        assert!(h.samples("old-0").is_empty());
        assert_eq!(h.summary("old-0"), Summary::default());
    }

    #[test]
    fn cpu_now_uses_the_live_counter_once_a_second_has_passed() {
        let mut h = UsageHistory::new(10_000, 60_000);
        assert_eq!(h.cpu_now("web-0", 0, Some(0)), None);
        h.record(0, &one("web-0", r(Some(0), None)));
        h.record(10_000, &one("web-0", r(Some(1_000_000_000), None)));
        // 500 ms later: too short, the last sample's 100.
        assert_eq!(h.cpu_now("web-0", 10_500, Some(2_000_000_000)), Some(100));
        // 2 s later with 2 s of CPU used: one core.
        assert_eq!(h.cpu_now("web-0", 12_000, Some(3_000_000_000)), Some(1000));
        // Unknown counter: the last sample.
        assert_eq!(h.cpu_now("web-0", 12_000, None), Some(100));
    }
}
