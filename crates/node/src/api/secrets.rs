//! `/v1/secrets`: set (the raw value in the body; sealed here, on the leader, before it
//! is proposed), list and history (never a value), remove.
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use holdfast_api::types::{
    SecretHistoryResponse, SecretKeyRotate, SecretKeyRotated, SecretSetResponse, SecretVersionView, SecretView,
    SecretsResponse,
};
use holdfast_state::secrets::{self, SecretVersion};
use holdfast_state::{ClusterState, Command, Request, Response as Applied};

use super::acl::Caller;
use super::ApiError;
use crate::peer::now_ms;
use crate::NodeContext;

fn parse(project: &str, name: &str) -> Result<(), ApiError> {
    secrets::parse_key(&secrets::key(project, name))
        .map(|_| ())
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e))
}

/// `PUT /v1/secrets/{project}/{name}`: the next version of a secret. Every service
/// reading it rolls, one instance at a time.
pub async fn set(
    State(ctx): State<NodeContext>,
    Extension(caller): Extension<Caller>,
    Path((project, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<SecretSetResponse>, ApiError> {
    parse(&project, &name)?;
    let value = zeroize::Zeroizing::new(body.to_vec());
    if value.len() > holdfast_secrets::MAX_SECRET_BYTES {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "a secret value may be at most {} bytes; this one has {} (nothing was stored)",
                holdfast_secrets::MAX_SECRET_BYTES,
                value.len()
            ),
        ));
    }
    let _guard = ctx.change_lock.lock().await;
    for _ in 0..5 {
        let state = ctx.control.read_linearizable().await?;
        let key = secrets::key(&project, &name);
        let version = state.secrets.get(&key).and_then(|r| r.current()).map_or(1, |c| c.version + 1);
        let sealed = ctx
            .keyring
            .seal(state.secrets_key_id.as_deref(), &project, &name, version, &value)
            .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("cannot seal the value: {e}")))?;
        let v = SecretVersion {
            version,
            sealed: Some(sealed),
            size: value.len() as u32,
            set_at_ms: now_ms(),
            set_by: caller.who.clone(),
        };
        let cmd = Command::PutSecret { project: project.clone(), name: name.clone(), version: v };
        match ctx.control.propose(Request::new(cmd)).await? {
            Applied::Applied { revision } => {
                let after = ctx.control.state();
                let rolling = secrets::consumers(&after, &project, &name).into_iter().map(str::to_string).collect();
                tracing::info!(secret = %key, version, by = %caller.who, "secret set");
                return Ok(Json(SecretSetResponse {
                    secret: key,
                    version,
                    size: value.len() as u32,
                    rolling,
                    revision,
                }));
            }
            // Another write took this version meanwhile: seal again for the next one.
            Applied::Refused { reason } if reason.contains("changed meanwhile") => continue,
            Applied::Refused { reason } => return Err(ApiError(StatusCode::CONFLICT, reason)),
            other => return Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{other:?}"))),
        }
    }
    Err(ApiError(StatusCode::CONFLICT, "the secret kept changing meanwhile; try again".into()))
}

/// `GET /v1/secrets`.
pub async fn list(State(ctx): State<NodeContext>) -> Result<Json<SecretsResponse>, ApiError> {
    let state = ctx.control.read_linearizable().await?;
    let secrets = secrets::listing(&state)
        .into_iter()
        .map(|(secret, (version, updated_at_ms, updated_by, used_by))| SecretView {
            secret,
            version,
            updated_at_ms,
            updated_by,
            used_by,
        })
        .collect();
    Ok(Json(SecretsResponse { secrets, key_id: state.secrets_key_id.clone() }))
}

/// `GET /v1/secrets/{project}/{name}`: its versions, newest first.
pub async fn history(
    State(ctx): State<NodeContext>,
    Path((project, name)): Path<(String, String)>,
) -> Result<Json<SecretHistoryResponse>, ApiError> {
    let (state, key) = existing(&ctx, &project, &name).await?;
    let rec = &state.secrets[&key];
    let current = rec.current().map(|c| c.version);
    let versions = rec
        .versions
        .iter()
        .rev()
        .map(|v| SecretVersionView {
            version: v.version,
            size: v.size,
            set_at_ms: v.set_at_ms,
            set_by: v.set_by.clone(),
            state: match (Some(v.version) == current, v.sealed.is_some()) {
                (true, _) => "current",
                (false, true) => "previous",
                (false, false) => "retired",
            }
            .to_string(),
        })
        .collect();
    let used_by = secrets::consumers(&state, &project, &name).into_iter().map(str::to_string).collect();
    Ok(Json(SecretHistoryResponse { secret: key, used_by, versions }))
}

/// `DELETE /v1/secrets/{project}/{name}`: refused while a service reads it.
pub async fn remove(
    State(ctx): State<NodeContext>,
    Path((project, name)): Path<(String, String)>,
) -> Result<Json<SecretHistoryResponse>, ApiError> {
    let (_, key) = existing(&ctx, &project, &name).await?;
    match ctx.control.propose(Request::new(Command::RemoveSecret { project, name })).await? {
        Applied::Applied { .. } => Ok(Json(SecretHistoryResponse { secret: key, used_by: vec![], versions: vec![] })),
        Applied::Refused { reason } => Err(ApiError(StatusCode::CONFLICT, reason)),
        other => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{other:?}"))),
    }
}

/// `POST /v1/secrets-key/rotate` (admin): a new cluster key; every readable version is
/// resealed under it in one entry, and every member fetches it.
pub async fn rotate_key(State(ctx): State<NodeContext>, body: Bytes) -> Result<Json<SecretKeyRotated>, ApiError> {
    let given = if body.is_empty() {
        None
    } else {
        let req: SecretKeyRotate = serde_json::from_slice(&body)
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid rotation request: {e}")))?;
        let text = zeroize::Zeroizing::new(req.new_key);
        Some(holdfast_secrets::ClusterKey::decode(&text).ok_or_else(|| {
            ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                "--new-key-file is not a holdfast secrets key (make one with `holdfast secret keygen`)".into(),
            )
        })?)
    };
    let _guard = ctx.change_lock.lock().await;
    let state = ctx.control.read_linearizable().await?;
    let unavailable = |e: String| ApiError(StatusCode::SERVICE_UNAVAILABLE, e);
    let old = match &state.secrets_key_id {
        Some(id) => Some(ctx.keyring.key_by_id(id).ok_or_else(|| {
            unavailable(format!("this node does not hold the cluster's key {id}; retry in a moment"))
        })?),
        None => None,
    };
    let new = ctx
        .keyring
        .prepare_rotation(&ctx.data_dir, given)
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, format!("{e}; nothing was changed")))?;
    let mut resealed = Vec::new();
    let mut fail = None;
    for (key, rec) in &state.secrets {
        // Every stored secret, the reserved `_acme/...` ones included (not `parse_key`,
        // which refuses names users may not give).
        let Some((project, name)) = key.split_once('/') else { continue };
        for v in &rec.versions {
            let Some(sealed) = &v.sealed else { continue };
            let (Some(old), ctx_text) = (&old, secrets::seal_context(project, name, v.version)) else { continue };
            match holdfast_secrets::reseal(old, &new, &ctx_text, sealed) {
                Ok(s) => resealed.push((key.clone(), v.version, s)),
                Err(e) => fail = Some(format!("{key} version {}: {e}", v.version)),
            }
        }
    }
    if let Some(e) = fail {
        ctx.keyring.abandon_rotation(&ctx.data_dir, &new);
        return Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot reseal {e}; nothing was changed")));
    }
    let count = resealed.len();
    let cmd = Command::RekeySecrets { from: state.secrets_key_id.clone(), to: new.id(), resealed };
    match ctx.control.propose(Request::new(cmd)).await {
        Ok(Applied::Applied { revision }) => {
            ctx.keyring.finish_rotation(&ctx.data_dir).map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
            tracing::info!(from = ?state.secrets_key_id, to = %new.id(), versions = count, "secrets key rotated");
            Ok(Json(SecretKeyRotated { from: state.secrets_key_id.clone(), to: new.id(), resealed: count, revision }))
        }
        Ok(Applied::Refused { reason }) => {
            ctx.keyring.abandon_rotation(&ctx.data_dir, &new);
            Err(ApiError(StatusCode::CONFLICT, format!("{reason}; nothing was changed")))
        }
        Ok(other) => {
            ctx.keyring.abandon_rotation(&ctx.data_dir, &new);
            Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{other:?}")))
        }
        // Not known whether it was committed: keep the new key (secrets.key.next) so a
        // commit is never left without it.
        Err(e) => Err(e.into()),
    }
}

/// A linearizable read of the state in which secret `project/name` exists, and its key.
async fn existing(
    ctx: &NodeContext,
    project: &str,
    name: &str,
) -> Result<(std::sync::Arc<ClusterState>, String), ApiError> {
    parse(project, name)?;
    let state = ctx.control.read_linearizable().await?;
    let key = secrets::key(project, name);
    if !state.secrets.contains_key(&key) {
        return Err(not_found(&state, &key));
    }
    Ok((state, key))
}

fn not_found(state: &ClusterState, key: &str) -> ApiError {
    let known: Vec<&str> = state.secrets.keys().map(String::as_str).collect();
    let hint = if known.is_empty() {
        " (no secrets are set)".to_string()
    } else {
        format!(" (secrets: {})", known.join(", "))
    };
    ApiError(StatusCode::NOT_FOUND, format!("there is no secret {key}{hint}"))
}
