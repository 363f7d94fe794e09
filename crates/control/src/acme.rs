//! When to order a certificate for a `tls: auto` host: a pure function of the state and
//! the wall clock, run by the leader (`node/acme.rs` carries the orders out).
//!
//! A host is ordered when it has no certificate, when two thirds of its certificate's
//! lifetime have passed (so 45-day and 6-day certificates renew in time too), when it
//! expired, when the configured CA changed, or when a user asked (`holdfast cert renew`)
//! — and never while a failed order's backoff runs. A host with a valid certificate
//! outside its renewal window is never ordered again (Let's Encrypt allows 5 duplicate
//! certificates a week).

use holdfast_state::acme::auto_hosts;
use holdfast_state::ClusterState;

/// A certificate to order now, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub host: String,
    pub why: String,
}

/// The hosts to order now, in name order.
pub fn due(state: &ClusterState, now_ms: u64) -> Vec<Due> {
    let acme = &state.acme;
    let mut out = Vec::new();
    for host in auto_hosts(state) {
        let order = acme.orders.get(&host).cloned().unwrap_or_default();
        if order.next_attempt_ms > now_ms {
            continue;
        }
        let why = match acme.certs.get(&host) {
            _ if order.renew_requested => "a renewal was asked for".to_string(),
            None => "no certificate yet".to_string(),
            Some(c) if c.directory != acme.config.directory => format!("the CA changed (was {})", c.directory),
            Some(c) if c.not_after_ms <= now_ms => {
                format!("the certificate expired at {}", holdfast_state::format_utc_ms(c.not_after_ms))
            }
            Some(c) if c.renew_at_ms() <= now_ms => {
                format!("renewal due (expires {})", holdfast_state::format_utc_ms(c.not_after_ms))
            }
            Some(_) => continue,
        };
        out.push(Due { host, why });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_state::acme::{AcmeCert, OrderRecord, LETS_ENCRYPT};
    use holdfast_state::{Command, Request};

    const DAY: u64 = 86_400_000;

    fn state() -> ClusterState {
        let mut s = ClusterState::default();
        let mut desired = s.desired.clone();
        for (host, tls) in [
            ("a.example", holdfast_spec::RouteTls::Auto),
            ("b.example", holdfast_spec::RouteTls::Auto),
            ("c.example", holdfast_spec::RouteTls::None),
        ] {
            desired.routes.push(holdfast_spec::RouteSpec {
                host: host.into(),
                path: "/".into(),
                service: "web".into(),
                port: "http".into(),
                tls,
                https_redirect: false,
                timeout_ms: None,
            });
        }
        s.apply(&Request::new(Command::SetDesired { expected_revision: 0, desired }));
        s
    }

    fn cert(days: u64, from_day: u64) -> AcmeCert {
        AcmeCert {
            chain_pem: String::new(),
            not_before_ms: from_day * DAY,
            not_after_ms: (from_day + days) * DAY,
            issued_at_ms: from_day * DAY,
            directory: LETS_ENCRYPT.into(),
        }
    }

    fn check(s: &ClusterState, now_day: u64, expected: &[(&str, &str)]) {
        let got: Vec<(String, String)> = due(s, now_day * DAY).into_iter().map(|d| (d.host, d.why)).collect();
        let want: Vec<(String, String)> = expected.iter().map(|(h, w)| (h.to_string(), w.to_string())).collect();
        assert_eq!(got, want, "day {now_day}");
    }

    #[test]
    fn orders_what_has_no_valid_certificate_and_nothing_else() {
        let mut s = state();
        check(&s, 100, &[("a.example", "no certificate yet"), ("b.example", "no certificate yet")]);
        s.acme.certs.insert("a.example".into(), cert(45, 100));
        s.acme.certs.insert("b.example".into(), cert(90, 100));
        check(&s, 100, &[]);
        check(&s, 129, &[]);
        check(&s, 130, &[("a.example", "renewal due (expires 1970-05-26 00:00:00 UTC)")]);
        check(
            &s,
            160,
            &[
                ("a.example", "the certificate expired at 1970-05-26 00:00:00 UTC"),
                ("b.example", "renewal due (expires 1970-07-10 00:00:00 UTC)"),
            ],
        );
        check(&s, 146, &[("a.example", "the certificate expired at 1970-05-26 00:00:00 UTC")]);
    }

    #[test]
    fn backoff_renewal_requests_and_a_new_ca() {
        let mut s = state();
        s.acme.certs.insert("a.example".into(), cert(90, 100));
        s.acme.certs.insert("b.example".into(), cert(90, 100));
        s.acme.orders.insert(
            "a.example".into(),
            OrderRecord { failures: 2, next_attempt_ms: 101 * DAY, ..OrderRecord::default() },
        );
        s.acme.orders.insert("b.example".into(), OrderRecord { renew_requested: true, ..OrderRecord::default() });
        check(&s, 100, &[("b.example", "a renewal was asked for")]);
        s.acme.config.directory = "https://acme.example/dir".into();
        check(&s, 100, &[("b.example", "a renewal was asked for")]);
        check(
            &s,
            101,
            &[
                ("a.example", "the CA changed (was https://acme-v02.api.letsencrypt.org/directory)"),
                ("b.example", "a renewal was asked for"),
            ],
        );
    }
}
