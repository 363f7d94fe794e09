//! Waiting on a condition with a deadline: [`wait_for`], the one polling loop of every
//! test that uses the testbed. On timeout it panics with what it waited for, for how long,
//! how many times it looked, and what it saw the last time it looked.

use std::fmt::Debug;
use std::time::{Duration, Instant};

/// How often [`wait_for`] looks again.
pub const POLL: Duration = Duration::from_millis(100);

/// Polls `probe` every [`POLL`] until it returns `Ok`, and returns that value. `Err(seen)`
/// means "not yet", with `seen` what was observed (a status, a count, an error). After
/// `timeout` it panics naming `what`, the time waited, the number of polls and the last
/// `seen`, so a failed wait says where the system got stuck, not just "timed out".
pub fn wait_for<T, S: Debug>(what: &str, timeout: Duration, probe: impl FnMut() -> Result<T, S>) -> T {
    wait_for_every(what, timeout, POLL, probe)
}

/// [`wait_for`] with its own poll interval.
pub fn wait_for_every<T, S: Debug>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Result<T, S>,
) -> T {
    let start = Instant::now();
    let mut polls = 0u32;
    loop {
        polls += 1;
        let seen = match probe() {
            Ok(v) => return v,
            Err(seen) => seen,
        };
        if start.elapsed() >= timeout {
            panic!("timed out after {:?} ({polls} polls) waiting for: {what}\nlast seen: {seen:#?}", start.elapsed());
        }
        std::thread::sleep(every);
    }
}

/// `Ok(value)` when `ok`, else `Err(seen)`: the usual last line of a [`wait_for`] probe.
pub fn seen_unless<T, S>(ok: bool, value: T, seen: S) -> Result<T, S> {
    if ok {
        Ok(value)
    } else {
        Err(seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_ok() {
        let mut n = 0;
        let got = wait_for("n to reach 3", Duration::from_secs(5), || {
            n += 1;
            seen_unless(n >= 3, n * 10, n)
        });
        assert_eq!(got, 30);
    }

    #[test]
    fn the_timeout_panic_names_the_wait_and_the_last_value_seen() {
        let panic = std::panic::catch_unwind(|| {
            let mut n = 0;
            wait_for_every("a counter at 1000", Duration::from_millis(50), Duration::from_millis(5), || {
                n += 1;
                seen_unless(false, (), format!("counter at {n}"))
            })
        })
        .expect_err("times out");
        let msg = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("waiting for: a counter at 1000"), "{msg}");
        assert!(msg.contains("last seen: \"counter at"), "{msg}");
        assert!(msg.contains("polls)"), "{msg}");
    }
}
