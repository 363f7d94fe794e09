//! holdfast's HTTP API surface: the JSON types ([`types`]), the node-to-node messages
//! ([`peer`]) and a client ([`client`]).
//!
//! The CLI depends on this crate only, never on the server's internals. Every endpoint
//! lives under `/v1` on the node's holdfast port and needs `Authorization: Bearer <token>`.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | POST | /v1/deploy | [`types::DeployRequest`] | [`types::PlanResponse`] |
//! | GET | /v1/status | | [`types::StatusResponse`] |
//! | POST | /v1/services/{name}/restart | | [`types::PlanResponse`] |
//! | POST | /v1/services/{name}/scale | [`types::ScaleRequest`] | [`types::PlanResponse`] |
//! | DELETE | /v1/services/{name} | | [`types::PlanResponse`] |
//! | GET | /v1/services/{name}/logs?tail=N&follow=true | | text, `instance | line` |
//! | POST | /v1/node/reexec | | 202; the daemon re-executes its binary |
//! | POST | /v1/tokens | [`types::TokenRequest`] | [`types::TokenResponse`] |
//! | GET | /v1/nodes | | [`types::NodesResponse`] |
//! | POST | /v1/nodes/{name}/drain, /uncordon | | [`types::NodeActionResponse`] |
//! | POST | /v1/nodes/{name}/labels | [`types::NodeLabelsRequest`] | [`types::NodeLabelsResponse`] |
//! | DELETE | /v1/nodes/{name} | | [`types::NodeActionResponse`] (202: the leader drains, then removes it) |
//! | POST | /v1/nodes/{name}/rm-cancel | | [`types::NodeActionResponse`] |
//! | GET | /v1/workers | | [`types::WorkersResponse`] |
//!
//! Node-to-node messages (join, heartbeat) are in [`peer`], each with a version.
//!
//! Everything is HTTPS; the client verifies the node against the cluster CA (`ca.pem`).
#![forbid(unsafe_code)]

pub mod client;
pub mod peer;
pub mod types;

pub use client::{Client, ClientError};
/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for unix milliseconds (the agent's, for every client).
pub use holdfast_agent::utc_timestamp;
