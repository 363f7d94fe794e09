//! Restart backoff math (pure): exponential delay per consecutive failure,
//! capped, reset after a stable run, and the crash-loop threshold.

use std::time::Duration;

/// Delay before the restart that follows the `failures`-th consecutive
/// failure: `base * 2^(failures-1)`, capped at `max`. Zero failures = no delay.
pub(crate) fn backoff_delay(base: Duration, max: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let exp = (failures - 1).min(31);
    base.saturating_mul(1u32 << exp).min(max)
}

/// Outcome of one failure for the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RestartPlan {
    pub delay: Duration,
    pub consecutive_failures: u32,
    pub crash_loop: bool,
}

/// Counts consecutive failures of one instance.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub base: Duration,
    pub max: Duration,
    pub reset_after: Duration,
    pub crash_loop_after: u32,
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(base: Duration, max: Duration, reset_after: Duration, crash_loop_after: u32) -> Self {
        Self { base, max, reset_after, crash_loop_after, failures: 0 }
    }

    /// Records a failure (an exit or a failed start) after a run of `uptime`
    /// and returns when to restart. A run of at least `reset_after` first
    /// resets the count, so a long-lived process that dies restarts quickly.
    pub(crate) fn on_failure(&mut self, uptime: Duration) -> RestartPlan {
        if uptime >= self.reset_after {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        RestartPlan {
            delay: backoff_delay(self.base, self.max, self.failures),
            consecutive_failures: self.failures,
            crash_loop: self.crash_loop_after > 0 && self.failures >= self.crash_loop_after,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn delay_doubles_and_caps() {
        let cases = [
            (0, 0),
            (1, 200),
            (2, 400),
            (3, 800),
            (4, 1600),
            (8, 25_600),
            (9, 30_000),
            (10, 30_000),
            (40, 30_000),
            (u32::MAX, 30_000),
        ];
        for (failures, want) in cases {
            assert_eq!(backoff_delay(MS(200), Duration::from_secs(30), failures), MS(want), "failures={failures}");
        }
    }

    #[test]
    fn crash_loop_after_threshold_and_reset_after_stable_run() {
        let mut b = Backoff::new(MS(100), MS(1000), Duration::from_secs(10), 3);
        let short = MS(50);
        let p1 = b.on_failure(short);
        assert_eq!((p1.delay, p1.crash_loop), (MS(100), false));
        let p2 = b.on_failure(short);
        assert_eq!((p2.delay, p2.crash_loop), (MS(200), false));
        let p3 = b.on_failure(short);
        assert_eq!((p3.delay, p3.crash_loop), (MS(400), true));
        let p4 = b.on_failure(short);
        assert_eq!((p4.delay, p4.crash_loop), (MS(800), true));
        let p5 = b.on_failure(short);
        assert_eq!((p5.delay, p5.crash_loop), (MS(1000), true));
        // A run longer than reset_after starts over.
        let p6 = b.on_failure(Duration::from_secs(11));
        assert_eq!(p6.consecutive_failures, 1);
        assert_eq!((p6.delay, p6.crash_loop), (MS(100), false));
        b.reset();
        assert_eq!(b.on_failure(short).consecutive_failures, 1);
    }

    #[test]
    fn zero_crash_loop_threshold_never_crash_loops() {
        let mut b = Backoff::new(MS(1), MS(2), Duration::from_secs(1), 0);
        for _ in 0..10 {
            assert!(!b.on_failure(MS(0)).crash_loop);
        }
    }
}
