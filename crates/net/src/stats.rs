//! Counters of the node's networking, for status and metrics.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the counters since `Net::start`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Connections accepted by the TCP service proxy.
    pub connections: u64,
    /// Proxy connections closed at once because the service had no ready endpoint (or every
    /// endpoint failed to connect).
    pub connections_refused: u64,
    /// Connection attempts to endpoints that failed or timed out (proxy and ingress).
    pub failed_connects: u64,
    /// Attempts made on another endpoint (or a fresh connection) after a failure.
    pub retries: u64,
    /// HTTP requests answered by the ingress, and by status class.
    pub http_requests: u64,
    pub http_1xx: u64,
    pub http_2xx: u64,
    pub http_3xx: u64,
    pub http_4xx: u64,
    pub http_5xx: u64,
    /// DNS queries answered, and those answered NXDOMAIN or REFUSED.
    pub dns_queries: u64,
    pub dns_nxdomain: u64,
    pub dns_refused: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub connections: AtomicU64,
    pub connections_refused: AtomicU64,
    pub failed_connects: AtomicU64,
    pub retries: AtomicU64,
    pub http_by_class: [AtomicU64; 5],
    pub dns_queries: AtomicU64,
    pub dns_nxdomain: AtomicU64,
    pub dns_refused: AtomicU64,
}

pub(crate) fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub fn http_status(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        inc(&self.http_by_class[class]);
    }

    pub fn snapshot(&self) -> NetStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let http: [u64; 5] = std::array::from_fn(|i| get(&self.http_by_class[i]));
        NetStats {
            connections: get(&self.connections),
            connections_refused: get(&self.connections_refused),
            failed_connects: get(&self.failed_connects),
            retries: get(&self.retries),
            http_requests: http.iter().sum(),
            http_1xx: http[0],
            http_2xx: http[1],
            http_3xx: http[2],
            http_4xx: http[3],
            http_5xx: http[4],
            dns_queries: get(&self.dns_queries),
            dns_nxdomain: get(&self.dns_nxdomain),
            dns_refused: get(&self.dns_refused),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_classes() {
        let c = Counters::default();
        for s in [101, 200, 204, 302, 404, 404, 502, 503, 999] {
            c.http_status(s);
        }
        let s = c.snapshot();
        assert_eq!((s.http_requests, s.http_1xx, s.http_2xx, s.http_3xx, s.http_4xx, s.http_5xx), (9, 1, 2, 1, 2, 3));
    }
}
