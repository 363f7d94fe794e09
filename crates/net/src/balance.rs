//! Endpoint choice for the TCP proxy and the HTTP ingress: **least connections**, ties broken
//! round-robin, endpoints that just failed ("passively down") only as a last resort.
//!
//! Why least connections rather than plain round-robin: the proxy carries long-lived
//! connections (databases, WebSockets, HTTP keep-alive) as well as short ones, and instances
//! differ in speed; counting what is in flight sends new work to the instance with the least
//! of it, lets a freshly (re)started instance catch up instead of staying idle, and steers
//! around a slow instance. With equal counts (the common case at low load) the rotating
//! start index makes it plain round-robin. Each node balances only its own connections,
//! which is what every node's independent copy can know without coordination.
//!
//! An endpoint whose connect fails or times out is marked down for [`PASSIVE_DOWN`], so one
//! dead instance does not cost every client a connect timeout before the health check (and
//! with it the daemon's next table) notices. Down endpoints are still tried when nothing else
//! is left: a passive mark is a hint, not a verdict.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::dial::Target;

/// How long an endpoint whose connect failed gets no new work unless nothing else is left.
pub(crate) const PASSIVE_DOWN: Duration = Duration::from_secs(2);

/// Milliseconds on a monotonic clock private to this process (never 0 after the first call).
pub(crate) fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(1)
}

/// What the choice needs to know about one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Candidate {
    /// Connections or requests in flight.
    pub active: usize,
    /// Passively marked down.
    pub down: bool,
    /// Already tried for this connection/request: never chosen again.
    pub tried: bool,
}

/// Chooses among `n` endpoints: untried ones only; up before down; then the fewest active;
/// ties go to the first in rotation order starting at `start`.
pub(crate) fn pick(n: usize, start: usize, candidate: impl Fn(usize) -> Candidate) -> Option<usize> {
    let mut best: Option<(bool, usize, usize)> = None; // (down, active, index)
    for k in 0..n {
        let i = (start + k) % n;
        let c = candidate(i);
        if c.tried {
            continue;
        }
        if best.is_none_or(|(down, active, _)| (c.down, c.active) < (down, active)) {
            best = Some((c.down, c.active, i));
        }
    }
    best.map(|(_, _, i)| i)
}

/// One endpoint target with its live counters. Shared across table updates (same instance
/// and target → same `Backend`), so the in-flight count and the down mark survive an update.
#[derive(Debug)]
pub(crate) struct Backend {
    pub instance: String,
    pub target: Target,
    active: AtomicUsize,
    down_until_ms: AtomicU64,
    /// Cancelled to cut every proxied connection open to this endpoint (a single-writer
    /// endpoint that stopped being ready); replaced by a fresh token when it is.
    cut: std::sync::Mutex<tokio_util::sync::CancellationToken>,
}

impl Backend {
    pub fn new(instance: String, target: Target) -> Self {
        Backend {
            instance,
            target,
            active: AtomicUsize::new(0),
            down_until_ms: AtomicU64::new(0),
            cut: std::sync::Mutex::new(tokio_util::sync::CancellationToken::new()),
        }
    }

    /// What a new connection to this endpoint watches to be cut.
    pub fn cut_signal(&self) -> tokio_util::sync::CancellationToken {
        self.cut.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Cuts every connection open to this endpoint now; later ones are not affected.
    pub fn cut_all(&self) {
        let mut cut = self.cut.lock().unwrap_or_else(|e| e.into_inner());
        cut.cancel();
        *cut = tokio_util::sync::CancellationToken::new();
    }

    pub fn candidate(&self, now_ms: u64, tried: bool) -> Candidate {
        Candidate {
            active: self.active.load(Ordering::Relaxed),
            down: self.down_until_ms.load(Ordering::Relaxed) > now_ms,
            tried,
        }
    }

    pub fn mark_down(&self, now_ms: u64) {
        let until = now_ms.saturating_add(u64::try_from(PASSIVE_DOWN.as_millis()).unwrap_or(u64::MAX));
        self.down_until_ms.store(until, Ordering::Relaxed);
    }

    pub fn mark_up(&self) {
        if self.down_until_ms.load(Ordering::Relaxed) != 0 {
            self.down_until_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Counts one connection/request in flight until the guard is dropped.
    pub fn acquire(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(Arc::clone(self))
    }
}

/// Decrements the endpoint's in-flight count when dropped.
#[derive(Debug)]
pub(crate) struct ActiveGuard(Arc<Backend>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The endpoints already tried for one connection or request; no allocation below 128
/// endpoints.
#[derive(Debug, Default)]
pub(crate) struct Tried {
    low: u128,
    high: Vec<usize>,
    count: usize,
}

impl Tried {
    pub fn insert(&mut self, i: usize) {
        if !self.contains(i) {
            self.count += 1;
            match u32::try_from(i) {
                Ok(bit) if bit < 128 => self.low |= 1 << bit,
                _ => self.high.push(i),
            }
        }
    }

    pub fn contains(&self, i: usize) -> bool {
        match u32::try_from(i) {
            Ok(bit) if bit < 128 => self.low & (1 << bit) != 0,
            _ => self.high.contains(&i),
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// The ready endpoints of one service port.
#[derive(Debug)]
pub(crate) struct Pool {
    /// The service's name, for messages.
    pub service: String,
    pub backends: Vec<Arc<Backend>>,
    /// See [`crate::ServiceNet::single_writer`].
    pub single_writer: bool,
    /// See [`crate::ServiceNet::redis_wait`].
    pub redis_wait: Option<crate::resp::RedisWait>,
    /// The service port's proxy counters (shared with the previous tables' pools).
    pub counters: Arc<crate::stats::ProxyCounters>,
    next: AtomicUsize,
}

impl Pool {
    pub fn new(service: String, backends: Vec<Arc<Backend>>) -> Self {
        Pool {
            service,
            backends,
            single_writer: false,
            redis_wait: None,
            counters: Arc::default(),
            next: AtomicUsize::new(0),
        }
    }

    /// The next endpoint to try, never one in `tried`.
    pub fn choose(&self, tried: &Tried, now_ms: u64) -> Option<usize> {
        let n = self.backends.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        pick(n, start, |i| self.backends[i].candidate(now_ms, tried.contains(i)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    /// `endpoints`: one word per endpoint, the active count followed by `d` (down) and/or `t`
    /// (tried); `expected`: the chosen index.
    fn check(endpoints: &str, start: usize, expected: Option<usize>) {
        let cands: Vec<Candidate> = endpoints
            .split_whitespace()
            .map(|w| Candidate {
                active: w.trim_end_matches(['d', 't']).parse().unwrap(),
                down: w.contains('d'),
                tried: w.contains('t'),
            })
            .collect();
        assert_eq!(pick(cands.len(), start, |i| cands[i]), expected, "{endpoints:?} start {start}");
    }

    #[test]
    fn choice() {
        check("", 0, None);
        check("0", 0, Some(0));
        check("0 0 0", 0, Some(0));
        check("0 0 0", 1, Some(1));
        check("0 0 0", 2, Some(2));
        check("0 0 0", 4, Some(1));
        check("1 0 1", 0, Some(1));
        check("3 2 1", 0, Some(2));
        check("1 1 0", 1, Some(2));
        check("0t 0 0", 0, Some(1));
        check("0t 0t 0", 0, Some(2));
        check("0t 0t 0t", 0, None);
        check("0d 5 5", 0, Some(1));
        check("0d 5 4", 0, Some(2));
        check("0d 0d", 1, Some(1));
        check("0d 2d", 0, Some(0));
        check("0dt 3d", 0, Some(1));
        check("0t 7d 9", 0, Some(2));
        check("2 1 1 2", 3, Some(1));
    }

    #[test]
    fn round_robin_when_idle() {
        let b = |i: u8| {
            Arc::new(Backend::new(format!("web-{i}"), SocketAddr::from(([127, 0, 0, 1], 1000 + u16::from(i))).into()))
        };
        let pool = Pool::new("web".into(), vec![b(0), b(1), b(2)]);
        let seq: Vec<_> = (0..6).map(|_| pool.choose(&Tried::default(), 1).unwrap()).collect();
        assert_eq!(seq, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn least_connections_and_down_marks() {
        let b0 = Arc::new(Backend::new("web-0".into(), SocketAddr::from(([127, 0, 0, 1], 1)).into()));
        let b1 = Arc::new(Backend::new("web-1".into(), SocketAddr::from(([127, 0, 0, 1], 2)).into()));
        let pool = Pool::new("web".into(), vec![b0.clone(), b1.clone()]);
        let tried = |ix: &[usize]| {
            let mut t = Tried::default();
            ix.iter().for_each(|i| t.insert(*i));
            t
        };
        let g = b0.acquire();
        assert_eq!((0..4).map(|_| pool.choose(&tried(&[]), 1).unwrap()).collect::<Vec<_>>(), [1, 1, 1, 1]);
        drop(g);
        b1.mark_down(1000);
        assert_eq!(pool.choose(&tried(&[]), 1500), Some(0));
        assert_eq!(pool.choose(&tried(&[0]), 1500), Some(1), "down endpoints are the last resort");
        assert_eq!(pool.choose(&tried(&[0, 1]), 1500), None);
        let later = 1000 + u64::try_from(PASSIVE_DOWN.as_millis()).unwrap() + 1;
        assert_eq!(pool.choose(&tried(&[0]), later), Some(1));
        b1.mark_down(1000);
        b1.mark_up();
        assert_eq!(pool.choose(&tried(&[0]), 1500), Some(1));
    }

    #[test]
    fn tried_set() {
        let mut t = Tried::default();
        assert!(t.is_empty());
        for i in [0, 5, 127, 128, 1000, 5] {
            t.insert(i);
        }
        assert_eq!(t.len(), 5);
        assert!([0, 5, 127, 128, 1000].iter().all(|i| t.contains(*i)));
        assert!(![1, 126, 129, 999].iter().any(|i| t.contains(*i)));
    }
}
