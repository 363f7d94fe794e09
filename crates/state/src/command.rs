//! Commands carried by Raft entries and their deterministic application.
use serde::{Deserialize, Serialize};

use crate::model::{ClusterState, Desired, NodeRecord, FORMAT_VERSION};

/// A Raft entry's payload: a command with the encoding version it was written with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub v: u32,
    pub command: Command,
}

impl Request {
    pub fn new(command: Command) -> Self {
        Request { v: FORMAT_VERSION, command }
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.command {
            Command::UpsertNode(n) => write!(f, "upsert-node {} ({})", n.id, n.name),
            Command::SetDesired { expected_revision, desired } => write!(
                f,
                "set-desired at revision {expected_revision}: {} services, {} routes",
                desired.services.len(),
                desired.routes.len()
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Register a node or update what it reports about itself.
    UpsertNode(NodeRecord),
    /// Replace the desired workloads, if nothing changed since `expected_revision`.
    SetDesired { expected_revision: u64, desired: Desired },
}

/// The outcome of applying a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Applied; the state is now at `revision`.
    Applied { revision: u64 },
    /// Refused because the state moved on since the change was planned.
    Conflict { current_revision: u64 },
    /// Refused: written by a newer holdfast than this one.
    UnsupportedVersion { v: u32 },
    /// Entries that carry no command (Raft's own blank and membership entries).
    Nothing,
}

impl ClusterState {
    /// Applies one command. Deterministic: every replica of the log reaches the same state.
    pub fn apply(&mut self, req: &Request) -> Response {
        if req.v > FORMAT_VERSION {
            return Response::UnsupportedVersion { v: req.v };
        }
        match &req.command {
            Command::UpsertNode(node) => {
                if self.nodes.get(&node.id) != Some(node) {
                    self.nodes.insert(node.id, node.clone());
                    self.revision += 1;
                }
                Response::Applied { revision: self.revision }
            }
            Command::SetDesired { expected_revision, desired } => {
                if *expected_revision != self.revision {
                    return Response::Conflict { current_revision: self.revision };
                }
                self.desired = desired.clone();
                self.revision += 1;
                Response::Applied { revision: self.revision }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_placement::Capacity;

    fn node(id: u64) -> NodeRecord {
        NodeRecord {
            id,
            name: format!("node-{id}"),
            addr: "127.0.0.1:7946".into(),
            site: "default".into(),
            arch: "amd64".into(),
            capacity: Capacity { cpu_millis: 2000, memory_bytes: 1 << 30 },
            labels: Default::default(),
            cordoned: false,
        }
    }

    #[test]
    fn set_desired_is_compare_and_set_on_revision() {
        let mut s = ClusterState::default();
        let ok = s.apply(&Request::new(Command::SetDesired { expected_revision: 0, desired: Desired::default() }));
        assert_eq!(ok, Response::Applied { revision: 1 });
        let stale = s.apply(&Request::new(Command::SetDesired { expected_revision: 0, desired: Desired::default() }));
        assert_eq!(stale, Response::Conflict { current_revision: 1 });
        assert_eq!(s.revision, 1);
    }

    #[test]
    fn upsert_node_is_idempotent() {
        let mut s = ClusterState::default();
        s.apply(&Request::new(Command::UpsertNode(node(1))));
        s.apply(&Request::new(Command::UpsertNode(node(1))));
        assert_eq!(s.revision, 1);
        assert_eq!(s.nodes.len(), 1);
    }

    #[test]
    fn newer_format_is_refused_untouched() {
        let mut s = ClusterState::default();
        let before = s.clone();
        let r = s.apply(&Request { v: FORMAT_VERSION + 1, command: Command::UpsertNode(node(1)) });
        assert_eq!(r, Response::UnsupportedVersion { v: FORMAT_VERSION + 1 });
        assert_eq!(s, before);
    }

    #[test]
    fn request_roundtrips_through_json() {
        let r = Request::new(Command::UpsertNode(node(7)));
        let text = serde_json::to_string(&r).expect("encode");
        let back: Request = serde_json::from_str(&text).expect("decode");
        assert_eq!(back, r);
    }
}
