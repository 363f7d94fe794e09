//! Node-to-node wire messages: joining (`POST /join`) and heartbeats
//! (`POST /cluster/heartbeat`).
//!
//! Every message carries a version `v`. A node refuses a message with a newer version
//! than it speaks (during a rolling upgrade, an old node cannot misread what a new one
//! sends) and still reads every older version: version 1 was the unversioned form, read
//! as `v = 1` because the field defaults to it. Raft's own messages are versioned by
//! openraft and by `holdfast_state::Request::v`.
use std::collections::BTreeMap;

use holdfast_agent::{InstanceId, InstanceStatus};
use holdfast_state::labels::StartLabels;
use holdfast_state::NodeRecord;
use serde::{Deserialize, Serialize};

/// The peer protocol version this build speaks.
pub const PEER_VERSION: u32 = 2;

fn v1() -> u32 {
    1
}

/// Why a peer message cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("invalid {what}: {source}")]
    Malformed { what: &'static str, source: serde_json::Error },
    #[error("{what} is peer protocol version {v}, this node speaks up to {PEER_VERSION}: upgrade this node")]
    TooNew { what: &'static str, v: u32 },
}

/// A versioned peer message.
pub trait PeerMessage: serde::de::DeserializeOwned {
    const WHAT: &'static str;

    /// Reads a message, refusing one from a newer protocol.
    fn decode(bytes: &[u8]) -> Result<Self, PeerError> {
        // Read the version first: a newer message may not even parse as this one.
        #[derive(Deserialize)]
        struct Version {
            #[serde(default = "v1")]
            v: u32,
        }
        let what = Self::WHAT;
        let v = serde_json::from_slice::<Version>(bytes).map_err(|source| PeerError::Malformed { what, source })?.v;
        if v > PEER_VERSION {
            return Err(PeerError::TooNew { what, v });
        }
        let msg: Self = serde_json::from_slice(bytes).map_err(|source| PeerError::Malformed { what, source })?;
        Ok(msg)
    }
}

/// `POST /cluster/heartbeat`: a node tells the leader it is alive, with its instances.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    #[serde(default = "v1")]
    pub v: u32,
    pub node: NodeRecord,
    pub instances: Vec<InstanceStatus>,
    /// The node's `--label` flags, when it started with some.
    #[serde(default)]
    pub start_labels: Option<StartLabels>,
    /// The database members this node runs, as its runner last saw them.
    #[serde(default)]
    pub databases: Vec<MemberStatus>,
}

/// One database member as its node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub database: String,
    pub member: u32,
    /// The term the node runs this member for.
    pub term: u64,
    pub role: MemberRole,
    pub timeline: u32,
    /// Primary: WAL flushed; replica: WAL received and flushed on the standby.
    pub lsn: u64,
    pub replay_lsn: u64,
    /// PostgreSQL answered the last probe.
    pub answering: bool,
    /// A replica streams from the primary.
    pub streaming: bool,
    /// The member's local port (loopback), for tunnels from other nodes.
    pub port: Option<u16>,
    /// What the runner did or waits for last, for `db status`.
    pub detail: String,
    /// A primary: the members its `synchronous_standby_names` names, as loaded (empty:
    /// commits wait for no standby); `None` otherwise, or while it holds its commits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_applied: Option<Vec<u32>>,
    /// A setting changed in its configuration takes effect only after a restart.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending_restart: bool,
    /// The database generation whose configuration the member had loaded when it was
    /// probed (so `pending_restart` speaks of that generation); `None`: not known (an
    /// older node, or an engine that does not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_generation: Option<u64>,
    /// Redis: the replication id the member serves (a master) or follows (a replica), so
    /// a replica still attached to a former master can be told from one that follows the
    /// current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replid: Option<String>,
}

/// A member's role as its node reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    Primary,
    Replica,
    /// Being prepared or started.
    Starting,
    Stopped,
    /// Stopped because its node lost its lease, or for a switchover.
    Fenced,
    /// Cannot be run (no PostgreSQL, no data, a command failed); `detail` says why.
    Failed,
}

/// The leader's answer: every node's instances as it last heard, and which of the
/// sender's own instances are superseded (fencing: stop them now, even before this
/// node's Raft log has caught up).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatReply {
    #[serde(default = "v1")]
    pub v: u32,
    pub instances: BTreeMap<u64, Vec<InstanceStatus>>,
    #[serde(default)]
    pub stale: Vec<(InstanceId, u64)>,
    /// The leader's state revision: a node that just started runs nothing new until its
    /// own state has caught up to it.
    #[serde(default)]
    pub revision: u64,
    /// Every node's database members as the leader last heard.
    #[serde(default)]
    pub databases: BTreeMap<u64, Vec<MemberStatus>>,
}

/// `POST /join`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    #[serde(default = "v1")]
    pub v: u32,
    pub token_id: String,
    pub secret: String,
    pub name: String,
    pub addr: String,
    pub site: String,
    pub arch: String,
    pub capacity: holdfast_placement::Capacity,
    pub public_key_pem: String,
    /// `--label` flags of the joining node.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The id of the joining node's start (see [`StartLabels`]).
    #[serde(default)]
    pub start_id: u64,
    /// What the joining machine offers (`postgres` → major version), so a database can
    /// be placed on it as soon as it is a member.
    #[serde(default)]
    pub software: BTreeMap<String, String>,
}

/// `POST /join` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinReply {
    #[serde(default = "v1")]
    pub v: u32,
    pub node_id: u64,
    pub name: String,
    pub cert_pem: String,
    pub ca_pem: String,
    pub admin_token: String,
}

impl PeerMessage for Heartbeat {
    const WHAT: &'static str = "heartbeat";
}
impl PeerMessage for HeartbeatReply {
    const WHAT: &'static str = "heartbeat answer";
}
impl PeerMessage for JoinRequest {
    const WHAT: &'static str = "join request";
}
impl PeerMessage for JoinReply {
    const WHAT: &'static str = "join answer";
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages exactly as version 1 (the previous release, unversioned) sent them.
    const V1_HEARTBEAT: &str = r#"{"node":{"id":7,"name":"n7","addr":"10.0.0.7:7946","site":"a","arch":"arm64","capacity":{"cpu_millis":4000,"memory_bytes":4294967296},"labels":{},"labels_start_id":0,"cordoned":false,"draining":false,"down":false,"cert_fingerprint":"ab"},"instances":[{"id":{"service":"web","replica":0},"generation":3,"pid":42,"state":"Ready","ready":true,"restarts":0,"ports":{"http":41001},"started_at_ms":1,"last_exit":null,"last_health_error":null,"adopted":false,"memory_bytes":null,"cpu_usage_ns":null,"warnings":[]}],"start_labels":{"start_id":9,"labels":{"disk":"ssd"}}}"#;
    const V1_REPLY: &str = r#"{"instances":{"7":[]},"stale":[[{"service":"web","replica":0},3]],"revision":12}"#;
    const V1_JOIN: &str = r#"{"token_id":"t","secret":"s","name":"n7","addr":"10.0.0.7:7946","site":"a","arch":"arm64","capacity":{"cpu_millis":4000,"memory_bytes":4294967296},"public_key_pem":"PEM","labels":{"disk":"ssd"},"start_id":9}"#;
    const V1_JOIN_REPLY: &str = r#"{"node_id":7,"name":"n7","cert_pem":"C","ca_pem":"CA","admin_token":"tok"}"#;

    #[test]
    fn the_previous_versions_messages_are_read() {
        let hb = Heartbeat::decode(V1_HEARTBEAT.as_bytes()).expect("v1 heartbeat");
        assert_eq!((hb.v, hb.node.id, hb.instances[0].generation), (1, 7, 3));
        assert!(!hb.node.removing, "a field v1 did not have takes its default");
        assert_eq!(hb.start_labels.map(|s| s.start_id), Some(9));
        let r = HeartbeatReply::decode(V1_REPLY.as_bytes()).expect("v1 reply");
        assert_eq!((r.v, r.revision, r.stale[0].1), (1, 12, 3));
        let j = JoinRequest::decode(V1_JOIN.as_bytes()).expect("v1 join");
        assert_eq!((j.v, j.name.as_str(), j.start_id), (1, "n7", 9));
        let a = JoinReply::decode(V1_JOIN_REPLY.as_bytes()).expect("v1 join reply");
        assert_eq!((a.v, a.node_id), (1, 7));
    }

    #[test]
    fn a_newer_version_is_refused_not_misread() {
        let newer = V1_HEARTBEAT.replacen('{', r#"{"v":3,"#, 1);
        let err = Heartbeat::decode(newer.as_bytes()).map(|_| ()).unwrap_err().to_string();
        assert_eq!(err, "heartbeat is peer protocol version 3, this node speaks up to 2: upgrade this node");
        // Even when its shape changed so much it would not parse as this version.
        let err = JoinRequest::decode(br#"{"v":9,"ticket":{}}"#).map(|_| ()).unwrap_err().to_string();
        assert!(err.starts_with("join request is peer protocol version 9"), "{err}");
        let err = JoinRequest::decode(b"[1,2]").map(|_| ()).unwrap_err().to_string();
        assert!(err.starts_with("invalid join request: "), "{err}");
    }

    #[test]
    fn this_versions_messages_round_trip() {
        let j = JoinReply::decode(V1_JOIN_REPLY.as_bytes()).expect("v1");
        let now = JoinReply { v: PEER_VERSION, ..j };
        let back = JoinReply::decode(&serde_json::to_vec(&now).expect("encode")).expect("decode");
        assert_eq!(back.v, PEER_VERSION);
    }
}
