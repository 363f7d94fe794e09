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
    /// Requests answered 504 because the backend did not answer within the route's timeout.
    pub http_timeouts: u64,
    /// Edge HTTPS connections whose TLS handshake failed or timed out (no certificate for
    /// the name asked, not TLS, ...).
    pub tls_handshake_failures: u64,
    /// Access-log lines dropped because the writer was behind.
    pub access_log_dropped: u64,
}

/// Upper bounds (seconds) of the buckets of a route's time-to-response-head histogram.
pub const LATENCY_BUCKETS_S: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// The counters of one route since the route appeared (kept across table updates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteStats {
    /// `host` + `path`, e.g. `shop.example/api`.
    pub route: String,
    pub service: String,
    pub requests: u64,
    pub http_1xx: u64,
    pub http_2xx: u64,
    pub http_3xx: u64,
    pub http_4xx: u64,
    pub http_5xx: u64,
    /// Attempts made on another instance after a failure.
    pub retries: u64,
    /// 504s: no response head within the route's timeout.
    pub timeouts: u64,
    /// Sum of the times to the response head, microseconds (mean = sum / requests).
    pub latency_us_sum: u64,
    /// Requests per bucket of [`LATENCY_BUCKETS_S`] (not cumulative); slower ones are
    /// only in `requests`.
    pub latency_buckets: [u64; LATENCY_BUCKETS_S.len()],
}

/// A route's live counters, shared by every compiled table that has the route.
#[derive(Debug, Default)]
pub(crate) struct RouteCounters {
    pub label: String,
    pub service: String,
    pub by_class: [AtomicU64; 5],
    pub retries: AtomicU64,
    pub timeouts: AtomicU64,
    pub latency_us_sum: AtomicU64,
    pub latency_buckets: [AtomicU64; LATENCY_BUCKETS_S.len()],
}

impl RouteCounters {
    pub fn new(label: String, service: String) -> Self {
        RouteCounters { label, service, ..Default::default() }
    }

    pub fn record(&self, status: u16, elapsed_us: u64) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        inc(&self.by_class[class]);
        self.latency_us_sum.fetch_add(elapsed_us, Ordering::Relaxed);
        let seconds = elapsed_us as f64 / 1e6;
        if let Some(i) = LATENCY_BUCKETS_S.iter().position(|b| seconds <= *b) {
            inc(&self.latency_buckets[i]);
        }
    }

    pub fn snapshot(&self) -> RouteStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let http: [u64; 5] = std::array::from_fn(|i| get(&self.by_class[i]));
        RouteStats {
            route: self.label.clone(),
            service: self.service.clone(),
            requests: http.iter().sum(),
            http_1xx: http[0],
            http_2xx: http[1],
            http_3xx: http[2],
            http_4xx: http[3],
            http_5xx: http[4],
            retries: get(&self.retries),
            timeouts: get(&self.timeouts),
            latency_us_sum: get(&self.latency_us_sum),
            latency_buckets: std::array::from_fn(|i| get(&self.latency_buckets[i])),
        }
    }
}

/// One service port's TCP proxy counters on this node, as a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyStats {
    pub project: String,
    pub service: String,
    /// The port's name (`http`, `rw`, ...).
    pub port: String,
    /// Connections accepted for it.
    pub connections: u64,
    /// Connections closed at once: no ready endpoint, or every one failed to connect, or
    /// (single writer) this node holds no lease.
    pub refused: u64,
    /// Connects to its endpoints that failed or timed out.
    pub failed_connects: u64,
}

/// One service port's proxy counters, carried over from table to table while the port
/// stays (keyed by project, service and port name).
#[derive(Debug, Default)]
pub(crate) struct ProxyCounters {
    pub project: String,
    pub service: String,
    pub port: String,
    pub connections: AtomicU64,
    pub refused: AtomicU64,
    pub failed_connects: AtomicU64,
}

impl ProxyCounters {
    pub fn new(project: String, service: String, port: String) -> Self {
        ProxyCounters { project, service, port, ..Default::default() }
    }

    pub fn snapshot(&self) -> ProxyStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ProxyStats {
            project: self.project.clone(),
            service: self.service.clone(),
            port: self.port.clone(),
            connections: get(&self.connections),
            refused: get(&self.refused),
            failed_connects: get(&self.failed_connects),
        }
    }
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
    pub http_timeouts: AtomicU64,
    pub tls_handshake_failures: AtomicU64,
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
            http_timeouts: get(&self.http_timeouts),
            tls_handshake_failures: get(&self.tls_handshake_failures),
            access_log_dropped: 0,
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
