//! API tokens: `POST/GET /v1/acl/tokens`, `DELETE /v1/acl/tokens/{id}`; who a bearer
//! token is ([`authenticate`]); and what scope each `/v1` call needs ([`need_for`], pure,
//! table-tested). `server.rs` runs both before any handler: a refused call changes
//! nothing and says which scope was missing.
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::Json;
use holdfast_api::types::{ApiTokenCreated, ApiTokenRequest, ApiTokenView, ApiTokensResponse};
use holdfast_state::acl::{ApiTokenRecord, Need, Scope};
use holdfast_state::{ClusterState, Command, Request, Response as Applied};

use super::ApiError;
use crate::peer::now_ms;
use crate::NodeContext;

/// Prefix of API tokens (`hfapi1.<id>.<secret>`); the admin token is 64 hex digits.
pub const TOKEN_PREFIX: &str = "hfapi1.";

/// Who made a request, as far as the API is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub scope: Scope,
    /// For history lines: `admin`, `token <id> (<name>)`.
    pub who: String,
}

impl Caller {
    /// Refuses (403, naming the missing scope) unless this caller may do `need`.
    pub fn require(&self, need: &Need) -> Result<(), ApiError> {
        holdfast_state::acl::check(&self.scope, need).map_err(|e| ApiError(StatusCode::FORBIDDEN, e))
    }
}

/// Compares without an early exit, so the time taken does not leak the secret.
pub fn same_secret(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The caller a bearer token stands for: the admin token, an API token of the state, or
/// the token of an active job run (`job_token`: the job and run a token was made for,
/// checked against the cluster key) — which may set only its job's `secrets_write`.
pub fn authenticate(
    state: &ClusterState,
    admin_token: &str,
    job_token: &dyn Fn(&str) -> Option<(String, u64)>,
    bearer: &str,
) -> Option<Caller> {
    let bearer = bearer.trim();
    if same_secret(bearer, admin_token) {
        return Some(Caller { scope: Scope::Admin, who: "admin".into() });
    }
    if let Some((job, run)) = job_token(bearer) {
        let rec = state.desired.jobs.get(&job)?;
        holdfast_state::jobs::active_run(state, &job, run)?;
        let keys = rec.spec.secrets_write.iter().map(|s| holdfast_state::secrets::key(&rec.project, s)).collect();
        return Some(Caller { scope: Scope::SecretsWrite(keys), who: format!("job {}/{job} run #{run}", rec.project) });
    }
    let (id, secret) = bearer.strip_prefix(TOKEN_PREFIX)?.split_once('.')?;
    let rec = state.api_tokens.get(id)?;
    same_secret(&holdfast_pki::hash_secret(secret), &rec.secret_hash)
        .then(|| Caller { scope: rec.scope.clone(), who: format!("token {id} ({})", rec.name) })
}

/// What a `/v1` call needs, from its method, path and the state (a service's or a
/// database's project). `None`: the handler checks (a deploy: the stack's project).
pub fn need_for(method: &Method, path: &str, state: &ClusterState) -> Option<Need> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let service_project = |name: &str| match state.desired.services.get(name) {
        Some(r) => Need::Project(r.project.clone()),
        // Unknown: the handler answers "unknown service" and nothing changes.
        None => Need::Read,
    };
    let database_project = |name: &str| match state.desired.databases.get(name) {
        Some(r) => Need::Project(r.project.clone()),
        None => Need::Read,
    };
    let job_project = |name: &str| match state.desired.jobs.get(name) {
        Some(r) => Need::Project(r.project.clone()),
        None => Need::Read,
    };
    let read = method == Method::GET;
    Some(match segs.as_slice() {
        ["v1", "jobs"] if read => Need::Read,
        ["v1", "jobs", _] if read => Need::Read,
        ["v1", "jobs", name, ..] => job_project(name),
        ["v1", "deploy"] => return None,
        ["v1", "services", name, "logs"] => service_project(name),
        ["v1", "services", name, ..] => service_project(name),
        ["v1", "databases", name, ..] => database_project(name),
        ["v1", "secrets", project, name] if method == Method::PUT => {
            Need::SetSecret(project.to_string(), name.to_string())
        }
        ["v1", "secrets", project, _] if !read => Need::Project(project.to_string()),
        ["v1", "secrets", ..] if read => Need::Read,
        ["v1", "status" | "nodes" | "databases" | "events" | "workers" | "routes" | "certs" | "usage"] if read => {
            Need::Read
        }
        ["v1", "cluster", "settings"] if read => Need::Read,
        ["metrics"] if read => Need::Read,
        _ => Need::Admin,
    })
}

fn view(id: &str, t: &ApiTokenRecord) -> ApiTokenView {
    ApiTokenView {
        id: id.to_string(),
        name: t.name.clone(),
        scope: t.scope.to_string(),
        created_at_ms: t.created_at_ms,
    }
}

/// `POST /v1/acl/tokens`: a new token, printed once; only its hash is stored.
pub async fn create(State(ctx): State<NodeContext>, body: Bytes) -> Result<Json<ApiTokenCreated>, ApiError> {
    let req: ApiTokenRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid token request: {e}")))?;
    let scope: Scope = req.scope.parse().map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    let name = req.name.trim().to_string();
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "--name must be 1-64 printable characters, e.g. `ci` or `grafana`".into(),
        ));
    }
    let rnd =
        |n| crate::identity::random_hex(n).map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()));
    let (id, secret) = (rnd(6)?, rnd(32)?);
    let record = ApiTokenRecord {
        name,
        scope,
        secret_hash: holdfast_pki::hash_secret(&secret),
        created_at_ms: now_ms(),
        job: None,
    };
    let created = view(&id, &record);
    match ctx.control.propose(Request::new(Command::AddApiToken { id: id.clone(), token: record })).await? {
        Applied::Applied { .. } => {
            Ok(Json(ApiTokenCreated { token: format!("{TOKEN_PREFIX}{id}.{secret}"), view: created }))
        }
        Applied::Refused { reason } => Err(ApiError(StatusCode::CONFLICT, reason)),
        other => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{other:?}"))),
    }
}

/// `GET /v1/acl/tokens`.
pub async fn list(State(ctx): State<NodeContext>) -> Result<Json<ApiTokensResponse>, ApiError> {
    let state = ctx.control.read_linearizable().await?;
    Ok(Json(ApiTokensResponse { tokens: state.api_tokens.iter().map(|(id, t)| view(id, t)).collect() }))
}

/// `DELETE /v1/acl/tokens/{id}`.
pub async fn remove(State(ctx): State<NodeContext>, Path(id): Path<String>) -> Result<Json<ApiTokenView>, ApiError> {
    let state = ctx.control.read_linearizable().await?;
    let Some(t) = state.api_tokens.get(&id) else {
        let known: Vec<&str> = state.api_tokens.keys().map(String::as_str).collect();
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "there is no API token {id}{}",
                if known.is_empty() {
                    " (there are none)".to_string()
                } else {
                    format!(" (tokens: {})", known.join(", "))
                }
            ),
        ));
    };
    let gone = view(&id, t);
    match ctx.control.propose(Request::new(Command::RemoveApiToken { id })).await? {
        Applied::Applied { .. } => Ok(Json(gone)),
        Applied::Refused { reason } => Err(ApiError(StatusCode::CONFLICT, reason)),
        other => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_state::model::ServiceRecord;

    fn state() -> ClusterState {
        let mut st = ClusterState::default();
        st.desired.services.insert(
            "web".into(),
            ServiceRecord::new(
                "shop".into(),
                holdfast_spec::ServiceSpec::new(holdfast_spec::RunCommand::Argv(vec!["x".into()])),
                std::net::Ipv4Addr::LOCALHOST,
                1,
            ),
        );
        st.api_tokens.insert(
            "abc".into(),
            ApiTokenRecord {
                name: "ci".into(),
                scope: Scope::Read,
                secret_hash: holdfast_pki::hash_secret("s3cret"),
                created_at_ms: 0,
                job: None,
            },
        );
        st
    }

    #[test]
    fn every_call_has_its_need() {
        let st = state();
        let p = |s: &str| Some(Need::Project(s.into()));
        let cases: &[(Method, &str, Option<Need>)] = &[
            (Method::POST, "/v1/deploy", None),
            (Method::GET, "/v1/status", Some(Need::Read)),
            (Method::GET, "/v1/nodes", Some(Need::Read)),
            (Method::GET, "/v1/events", Some(Need::Read)),
            (Method::GET, "/v1/usage", Some(Need::Read)),
            (Method::GET, "/v1/secrets", Some(Need::Read)),
            (Method::GET, "/v1/secrets/shop/key", Some(Need::Read)),
            (Method::PUT, "/v1/secrets/shop/key", Some(Need::SetSecret("shop".into(), "key".into()))),
            (Method::DELETE, "/v1/secrets/shop/key", p("shop")),
            (Method::POST, "/v1/services/web/restart", p("shop")),
            (Method::POST, "/v1/services/web/scale", p("shop")),
            (Method::DELETE, "/v1/services/web", p("shop")),
            (Method::GET, "/v1/services/web/logs", p("shop")),
            (Method::POST, "/v1/services/nope/restart", Some(Need::Read)),
            (Method::GET, "/v1/cluster/settings", Some(Need::Read)),
            (Method::PUT, "/v1/cluster/settings", Some(Need::Admin)),
            (Method::POST, "/v1/tokens", Some(Need::Admin)),
            (Method::POST, "/v1/acl/tokens", Some(Need::Admin)),
            (Method::GET, "/v1/acl/tokens", Some(Need::Admin)),
            (Method::POST, "/v1/nodes/n1/drain", Some(Need::Admin)),
            (Method::DELETE, "/v1/nodes/n1", Some(Need::Admin)),
            (Method::POST, "/v1/node/reexec", Some(Need::Admin)),
            (Method::GET, "/v1/somewhere-new", Some(Need::Admin)),
            (Method::GET, "/v1/jobs", Some(Need::Read)),
            (Method::GET, "/v1/jobs/nope", Some(Need::Read)),
            (Method::POST, "/v1/jobs/nope/run", Some(Need::Read)),
        ];
        for (m, path, want) in cases {
            assert_eq!(&need_for(m, path, &st), want, "{m} {path}");
        }
    }

    #[test]
    fn tokens_authenticate_by_hash() {
        let st = state();
        let no_jobs = |_: &str| None;
        assert_eq!(authenticate(&st, "adm", &no_jobs, "adm").unwrap().scope, Scope::Admin);
        let c = authenticate(&st, "adm", &no_jobs, "hfapi1.abc.s3cret").unwrap();
        assert_eq!((c.scope, c.who.as_str()), (Scope::Read, "token abc (ci)"));
        for bad in ["hfapi1.abc.wrong", "hfapi1.zzz.s3cret", "hfapi1.abc", "adm2", ""] {
            assert_eq!(authenticate(&st, "adm", &no_jobs, bad), None, "{bad}");
        }
    }
}
