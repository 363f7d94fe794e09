//! `POST /v1/tokens`: join tokens.
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use holdfast_api::types::{TokenRequest, TokenResponse};
use holdfast_state::{Command, Request};

use super::ApiError;
use crate::identity;
use crate::peer::now_ms;
use crate::NodeContext;

/// `POST /v1/tokens`.
pub async fn create_token(State(ctx): State<NodeContext>, body: Bytes) -> Result<Json<TokenResponse>, ApiError> {
    let req: TokenRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid token request: {e}")))?;
    if req.ttl_ms == 0 || req.ttl_ms > 30 * 24 * 3600 * 1000 {
        return Err(ApiError(StatusCode::UNPROCESSABLE_ENTITY, "--ttl must be between 1s and 30 days".into()));
    }
    let rnd = |n| identity::random_hex(n).map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()));
    let (id, secret) = (rnd(8)?, rnd(32)?);
    let expires_at_ms = now_ms() + req.ttl_ms;
    let state = ctx.control.read_linearizable().await?;
    let ca = state
        .ca
        .as_ref()
        .ok_or_else(|| ApiError(StatusCode::SERVICE_UNAVAILABLE, "the cluster CA is not recorded yet; retry".into()))?;
    let fingerprint = holdfast_pki::fingerprint_of_pem(&ca.cert_pem)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let cmd = Command::AddJoinToken { id: id.clone(), secret_hash: holdfast_pki::hash_secret(&secret), expires_at_ms };
    ctx.control.propose(Request::new(cmd)).await?;
    let join_addr = ctx.advertise.to_string();
    // Every other member it knows of too, so a joining machine is not stuck when this
    // one is down.
    let addrs: Vec<String> =
        state.nodes.values().filter(|n| !n.down && n.addr != join_addr).map(|n| n.addr.clone()).collect();
    let token =
        holdfast_pki::JoinToken { addr: join_addr.clone(), addrs, ca: fingerprint, id, secret, expires_at_ms }.encode();
    Ok(Json(TokenResponse { token, expires_at_ms, join_addr }))
}
