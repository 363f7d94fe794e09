//! Automatic certificates (`tls: auto`) in the replicated state: the ACME configuration,
//! the account, the HTTP-01 challenges every edge answers, the issued certificates and
//! each host's order record (failures, last error, backoff, a renewal asked for).
//!
//! Private material is sealed like any secret, in the reserved project `_acme` of
//! `ClusterState.secrets` (the account credentials as `_acme/@account`, a certificate's
//! key as `_acme/<host>`), so a key rotation reseals it with the rest and it never rests
//! in the clear. Users cannot name that project (`secrets::parse_key` refuses `_`).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::secrets::SecretVersion;
use crate::ClusterState;

/// The reserved secrets project of ACME material.
pub const ACME_PROJECT: &str = "_acme";
/// The secret name of the account credentials.
pub const ACCOUNT_SECRET: &str = "@account";
/// Let's Encrypt's production directory, the default.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Where certificates are ordered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeConfig {
    /// The CA's directory URL.
    pub directory: String,
    /// Contact address for the account (expiry notices), optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// A PEM root to trust for the directory's HTTPS (a private or test CA such as
    /// pebble); `None`: the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        AcmeConfig { directory: LETS_ENCRYPT.to_string(), email: None, ca_pem: None }
    }
}

/// An issued certificate; its key is the current version of secret `_acme/<host>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeCert {
    /// The PEM chain as the CA returned it (public).
    pub chain_pem: String,
    pub not_before_ms: u64,
    pub not_after_ms: u64,
    pub issued_at_ms: u64,
    /// The directory it came from.
    pub directory: String,
}

impl AcmeCert {
    /// When to renew: once two thirds of the lifetime passed (a 90-day certificate at 30
    /// days left, a 45-day one at 15, a 6-day one at 2).
    pub fn renew_at_ms(&self) -> u64 {
        let life = self.not_after_ms.saturating_sub(self.not_before_ms);
        self.not_before_ms + life / 3 * 2
    }
}

/// What happened to a host's orders.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRecord {
    /// Failed orders in a row (reset by an issued certificate).
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub last_attempt_ms: u64,
    /// No new order before this (backoff after a failure).
    pub next_attempt_ms: u64,
    /// A renewal asked for by a user (`holdfast cert renew`), cleared by the next issue.
    pub renew_requested: bool,
}

/// The ACME part of the state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeState {
    pub config: AcmeConfig,
    /// The directory the stored account (secret `_acme/@account`) belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_directory: Option<String>,
    /// HTTP-01 challenges being answered: token → key authorization.
    pub challenges: BTreeMap<String, String>,
    /// Issued certificates by host.
    pub certs: BTreeMap<String, AcmeCert>,
    /// Order records by host.
    pub orders: BTreeMap<String, OrderRecord>,
}

/// Backoff after the `failures`-th failed order in a row: 1 min, doubling, at most 6 h.
pub fn backoff_ms(failures: u32) -> u64 {
    let base: u64 = 60_000;
    base.saturating_mul(1u64 << failures.saturating_sub(1).min(20)).min(6 * 3_600_000)
}

/// Applies `PutAcmeAccount`.
pub(crate) fn put_account(
    state: &mut ClusterState,
    directory: &str,
    credentials: &SecretVersion,
) -> Result<(), String> {
    crate::secrets::put(state, ACME_PROJECT, ACCOUNT_SECRET, credentials)?;
    state.acme.account_directory = Some(directory.to_string());
    Ok(())
}

/// Applies `PutAcmeCert`: the key as the next version of `_acme/<host>`, the certificate,
/// and a clean order record.
pub(crate) fn put_cert(
    state: &mut ClusterState,
    host: &str,
    cert: &AcmeCert,
    key: &SecretVersion,
) -> Result<(), String> {
    crate::secrets::put(state, ACME_PROJECT, host, key)?;
    state.acme.certs.insert(host.to_string(), cert.clone());
    state
        .acme
        .orders
        .insert(host.to_string(), OrderRecord { last_attempt_ms: cert.issued_at_ms, ..OrderRecord::default() });
    Ok(())
}

/// Applies `AcmeOrderFailed`.
pub(crate) fn order_failed(state: &mut ClusterState, host: &str, error: &str, at_ms: u64) {
    let rec = state.acme.orders.entry(host.to_string()).or_default();
    rec.failures = rec.failures.saturating_add(1);
    rec.last_error = Some(error.to_string());
    rec.last_attempt_ms = at_ms;
    rec.next_attempt_ms = at_ms.saturating_add(backoff_ms(rec.failures));
}

/// Applies `RenewAcmeCert`: refused for a host no `tls: auto` route serves.
pub(crate) fn renew(state: &mut ClusterState, host: &str) -> Result<(), String> {
    if !auto_hosts(state).iter().any(|h| h == host) {
        let hosts = auto_hosts(state);
        return Err(if hosts.is_empty() {
            format!("no route has `tls: auto`, so there is no certificate of {host} to renew")
        } else {
            format!("no `tls: auto` route serves {host} (automatic certificates: {})", hosts.join(", "))
        });
    }
    let rec = state.acme.orders.entry(host.to_string()).or_default();
    rec.renew_requested = true;
    rec.next_attempt_ms = 0;
    Ok(())
}

/// The hosts of `tls: auto` routes, sorted and distinct.
pub fn auto_hosts(state: &ClusterState) -> Vec<String> {
    let mut hosts: Vec<String> = state
        .desired
        .routes
        .iter()
        .filter(|r| r.tls == holdfast_spec::RouteTls::Auto)
        .map(|r| r.host.clone())
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_six_hours() {
        let mins: Vec<u64> = (1..=11).map(|f| backoff_ms(f) / 60_000).collect();
        assert_eq!(mins, [1, 2, 4, 8, 16, 32, 64, 128, 256, 360, 360]);
        assert_eq!(backoff_ms(u32::MAX), 6 * 3_600_000);
    }

    #[test]
    fn renewal_at_two_thirds_of_any_lifetime() {
        let day = 86_400_000;
        let cert = |days: u64| AcmeCert {
            chain_pem: String::new(),
            not_before_ms: 1_000 * day,
            not_after_ms: (1_000 + days) * day,
            issued_at_ms: 1_000 * day,
            directory: String::new(),
        };
        assert_eq!(cert(90).renew_at_ms(), 1_060 * day);
        assert_eq!(cert(45).renew_at_ms(), 1_030 * day);
        assert_eq!(cert(6).renew_at_ms(), 1_004 * day);
    }
}
