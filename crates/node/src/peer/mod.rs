//! Node-to-node protocols, all on the holdfast port under mutual TLS (except `/join`,
//! which a new node calls with a join token before it has a certificate). Their wire
//! messages are in `holdfast_api::peer`, each with a version.
//!
//! - [`join`]: `POST /join` (leader) and the joining node's side.
//! - [`heartbeat`]: every node's heartbeat to the leader and the leader's answer (other
//!   nodes' instances, fencing verdicts); what the leader heard is the controller's
//!   observation.
//! - [`links`]: one multiplexed HTTP/2 link per peer node, with keepalive pings and
//!   active checks of the endpoints behind it.
//! - [`tunnel`]: cross-node service traffic over those links (server side, and the
//!   `holdfast-net` dialer).
pub mod heartbeat;
pub mod join;
pub mod links;
pub mod tunnel;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::api::ApiError;
use crate::NodeContext;

/// The header a follower puts the leader's address in when it refuses a leader-only call.
pub const LEADER_HEADER: &str = "x-holdfast-leader";

/// 421 with the leader's address, for a call only the leader answers.
pub fn not_leader(ctx: &NodeContext) -> Response {
    let leader = ctx.control.leader().map(|(_, a)| a);
    let mut resp = ApiError(
        StatusCode::MISDIRECTED_REQUEST,
        format!(
            "this node is not the leader{}",
            leader.as_ref().map(|l| format!("; the leader is {l}")).unwrap_or_default()
        ),
    )
    .into_response();
    if let Some(l) = leader.and_then(|l| axum::http::HeaderValue::from_str(&l).ok()) {
        resp.headers_mut().insert(LEADER_HEADER, l);
    }
    resp
}

/// Wall-clock milliseconds since the Unix epoch (token expiry, event times).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
