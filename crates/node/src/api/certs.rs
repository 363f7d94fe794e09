//! `GET /v1/certs` (every certificate the routes need: where it comes from, its names,
//! expiry, renewal and last error), `POST /v1/certs/{host}/renew` (a new ACME
//! certificate now) and `PUT /v1/acme` (where ACME certificates are ordered).
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use bytes::Bytes;
use holdfast_api::types::{AcmeConfigRequest, CertView, CertsResponse};
use holdfast_state::acme::AcmeConfig;
use holdfast_state::{ClusterState, Command, Request};

use super::ApiError;
use crate::edge::CertSource;
use crate::peer::now_ms;
use crate::NodeContext;

fn view(ctx: &NodeContext, state: &ClusterState) -> CertsResponse {
    let now = now_ms();
    let mut certs = Vec::new();
    for src in crate::edge::certificate_sources(state)
        .into_iter()
        .chain(holdfast_state::acme::auto_hosts(state).into_iter().map(|host| CertSource::Acme { host }))
        .collect::<std::collections::BTreeSet<_>>()
    {
        let (hosts, source) = match &src {
            CertSource::Acme { host } => (vec![host.clone()], "acme".to_string()),
            CertSource::Secrets { cert, key } => {
                let hosts = crate::edge::hosts_of(state, &src);
                (hosts, format!("secrets {cert} {key}"))
            }
        };
        let order = match &src {
            CertSource::Acme { host } => state.acme.orders.get(host).cloned().unwrap_or_default(),
            CertSource::Secrets { .. } => Default::default(),
        };
        let renew_at_ms = match &src {
            CertSource::Acme { host } => state.acme.certs.get(host).map(|c| c.renew_at_ms()),
            CertSource::Secrets { .. } => None,
        };
        let opened = match &src {
            CertSource::Acme { host } if !state.acme.certs.contains_key(host) => Err("no certificate yet".to_string()),
            _ => crate::edge::open_source(ctx, state, &src),
        };
        let (names, not_after_ms, status) = match opened {
            Ok(c) => {
                let until = u64::try_from(c.not_after()).unwrap_or(0) * 1000;
                let status = if until <= now { "expired" } else { "valid" };
                (c.names().to_vec(), Some(until), status.to_string())
            }
            Err(e) => (Vec::new(), None, e),
        };
        certs.push(CertView {
            hosts,
            source,
            names,
            not_after_ms,
            renew_at_ms,
            status,
            failures: order.failures,
            last_error: order.last_error.clone(),
            next_attempt_ms: (order.next_attempt_ms > now).then_some(order.next_attempt_ms),
            renew_requested: order.renew_requested,
        });
    }
    CertsResponse {
        acme_directory: state.acme.config.directory.clone(),
        acme_email: state.acme.config.email.clone(),
        acme_custom_ca: state.acme.config.ca_pem.is_some(),
        certs,
    }
}

/// `GET /v1/certs`.
pub async fn list(State(ctx): State<NodeContext>) -> Json<CertsResponse> {
    Json(view(&ctx, &ctx.control.state()))
}

async fn propose(ctx: &NodeContext, cmd: Command) -> Result<(), ApiError> {
    match ctx.control.propose(Request::new(cmd)).await? {
        holdfast_state::Response::Applied { .. } => Ok(()),
        holdfast_state::Response::Refused { reason } => Err(ApiError(StatusCode::NOT_FOUND, reason)),
        other => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("not applied: {other:?}"))),
    }
}

/// `POST /v1/certs/{host}/renew`.
pub async fn renew(State(ctx): State<NodeContext>, Path(host): Path<String>) -> Result<Json<CertsResponse>, ApiError> {
    propose(&ctx, Command::RenewAcmeCert { host: host.to_ascii_lowercase() }).await?;
    Ok(Json(view(&ctx, &ctx.control.state())))
}

/// The configuration a request asks for, or what is wrong with it.
fn checked(req: AcmeConfigRequest) -> Result<AcmeConfig, String> {
    let uri: hyper::Uri =
        req.directory.parse().map_err(|_| format!("--directory `{}` is not a URL", req.directory.escape_debug()))?;
    if uri.scheme_str() != Some("https") || uri.host().is_none() {
        return Err(format!(
            "--directory `{}` must be an https:// URL, e.g. https://acme-v02.api.letsencrypt.org/directory",
            req.directory
        ));
    }
    let email = req.email.map(|e| e.trim().to_string()).filter(|e| !e.is_empty());
    if let Some(e) = &email {
        let ok = e.split_once('@').is_some_and(|(u, d)| !u.is_empty() && d.contains('.'))
            && !e.chars().any(|c| c.is_whitespace() || c.is_control());
        if !ok {
            return Err(format!("--email `{}` is not an email address", e.escape_debug()));
        }
    }
    if let Some(pem) = &req.ca_pem {
        use rustls::pki_types::pem::PemObject;
        let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("--ca-file is not a PEM certificate: {e}"))?;
        if certs.is_empty() {
            return Err("--ca-file holds no certificate (expected `-----BEGIN CERTIFICATE-----`)".into());
        }
    }
    Ok(AcmeConfig { directory: req.directory, email, ca_pem: req.ca_pem })
}

/// `PUT /v1/acme`.
pub async fn set_acme(State(ctx): State<NodeContext>, body: Bytes) -> Result<Json<CertsResponse>, ApiError> {
    let req: AcmeConfigRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid ACME settings: {e}")))?;
    let config = checked(req).map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    propose(&ctx, Command::SetAcmeConfig { config }).await?;
    Ok(Json(view(&ctx, &ctx.control.state())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(directory: &str, email: Option<&str>, ca: Option<&str>) -> AcmeConfigRequest {
        AcmeConfigRequest {
            directory: directory.into(),
            email: email.map(str::to_string),
            ca_pem: ca.map(str::to_string),
        }
    }

    #[test]
    fn acme_settings_are_checked() {
        assert!(checked(req("https://acme-v02.api.letsencrypt.org/directory", Some("ops@example.com"), None)).is_ok());
        assert_eq!(
            checked(req("http://acme.example/dir", None, None)).unwrap_err(),
            "--directory `http://acme.example/dir` must be an https:// URL, e.g. https://acme-v02.api.letsencrypt.org/directory"
        );
        assert_eq!(checked(req("not a url", None, None)).unwrap_err(), "--directory `not a url` is not a URL");
        assert_eq!(
            checked(req("https://a.example/d", Some("nobody"), None)).unwrap_err(),
            "--email `nobody` is not an email address"
        );
        assert_eq!(
            checked(req("https://a.example/d", None, Some("hello"))).unwrap_err(),
            "--ca-file holds no certificate (expected `-----BEGIN CERTIFICATE-----`)"
        );
        let blank = checked(req("https://a.example/d", Some("  "), None)).map(|c| c.email);
        assert_eq!(blank, Ok(None));
    }
}
