//! This node's copy of the cluster's secrets key, and the edges that use it: sealing a
//! value the API receives, opening the versions this node's instances read (the agent's
//! [`holdfast_agent::SecretSource`]), and fetching the key from another node when this
//! one has none yet.
//!
//! Where the key lives is the operator's choice, per node:
//! - **in the data directory** (the default): `secrets.key`, mode 0600, created by the
//!   node that creates the cluster; every other node fetches it once from a node that
//!   holds it, over the mutual-TLS node port (`GET /cluster/secrets-key`), and keeps it.
//!   The Raft log and snapshots hold only ciphertext, but a copy of a whole data
//!   directory can open them.
//! - **in a file elsewhere** (`holdfast up --secrets-key-file PATH`: another disk, a
//!   tmpfs filled at boot): read at start, never copied into the data directory and never
//!   handed to other nodes; give every node the same file. A data directory alone then
//!   opens nothing.
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::Duration;

use holdfast_secrets::{ClusterKey, Plain, SecretError};
use tokio_util::sync::CancellationToken;

use crate::{NodeContext, NodeError};

/// This node's key and where it came from.
pub struct Keyring {
    key: RwLock<Option<ClusterKey>>,
    /// `Some(path)`: kept in the data directory (fetched keys are written there, and the
    /// key may be handed to other members). `None`: an external file.
    stored: Option<PathBuf>,
}

impl Keyring {
    /// Loads the key: from `external` if given (it must exist), else the data directory's
    /// file, created on the node that founds the cluster.
    pub fn load(data_dir: &Path, external: Option<&Path>, founder: bool) -> Result<Keyring, NodeError> {
        let err = |e: SecretError| NodeError::DataDir { path: data_dir.display().to_string(), message: e.to_string() };
        if let Some(path) = external {
            let key = ClusterKey::load(path).map_err(err)?;
            tracing::info!(key = %key.id(), file = %path.display(), "secrets key read from its own file (not kept in the data directory)");
            return Ok(Keyring { key: RwLock::new(Some(key)), stored: None });
        }
        let path = data_dir.join(holdfast_secrets::KEY_FILE);
        let key = if path.exists() {
            Some(ClusterKey::load(&path).map_err(err)?)
        } else if founder {
            let key = ClusterKey::generate().map_err(err)?;
            key.write_new(&path).map_err(err)?;
            tracing::info!(key = %key.id(), "created the cluster's secrets key");
            Some(key)
        } else {
            None
        };
        Ok(Keyring { key: RwLock::new(key), stored: Some(path) })
    }

    /// The key, if this node has it.
    pub fn key(&self) -> Option<ClusterKey> {
        self.key.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The key, if this node may hand it to another member (it keeps it in its data
    /// directory; an external key is never handed out).
    pub fn shareable(&self) -> Option<ClusterKey> {
        self.stored.as_ref().and_then(|_| self.key())
    }

    fn install(&self, key: ClusterKey) -> Result<(), SecretError> {
        if let Some(path) = &self.stored {
            if !path.exists() {
                key.write_new(path)?;
            }
        }
        *self.key.write().unwrap_or_else(|e| e.into_inner()) = Some(key);
        Ok(())
    }

    fn missing(&self) -> String {
        match &self.stored {
            Some(_) => "this node has not received the cluster's secrets key yet (it fetches it from another node; see `holdfast workers`)".into(),
            None => "this node has no secrets key".into(),
        }
    }

    /// Seals `value` as version `version` of `project/name`.
    pub fn seal(
        &self,
        project: &str,
        name: &str,
        version: u64,
        value: &[u8],
    ) -> Result<holdfast_secrets::Sealed, String> {
        let key = self.key().ok_or_else(|| self.missing())?;
        let ctx = holdfast_state::secrets::seal_context(project, name, version);
        holdfast_secrets::seal(&key, &ctx, value).map_err(|e| e.to_string())
    }
}

/// Opens the secrets this node's instances read, from the replicated state.
pub struct StateSecrets {
    pub control: holdfast_raft::ControlPlane,
    pub keyring: std::sync::Arc<Keyring>,
}

impl holdfast_agent::SecretSource for StateSecrets {
    fn open(&self, secret: &str, version: u64) -> Result<Plain, String> {
        let state = self.control.state();
        let (project, name) = holdfast_state::secrets::parse_key(secret)?;
        let rec = state.secrets.get(secret).ok_or_else(|| format!("there is no secret {secret}"))?;
        let sealed = rec.readable(version).ok_or_else(|| {
            format!(
                "version {version} of {secret} is retired (only the current and the previous version stay readable)"
            )
        })?;
        let key = self.keyring.key().ok_or_else(|| self.keyring.missing())?;
        holdfast_secrets::open(&key, &holdfast_state::secrets::seal_context(project, name, version), sealed)
            .map_err(|e| e.to_string())
    }
}

/// `GET /cluster/secrets-key` (member certificate): the key, to a member that has none,
/// when this node keeps it in its data directory.
pub async fn serve_key(axum::extract::State(ctx): axum::extract::State<NodeContext>) -> axum::response::Response {
    use axum::response::IntoResponse;
    match ctx.keyring.shareable() {
        Some(key) => key.encode().to_string().into_response(),
        None => crate::api::ApiError(
            axum::http::StatusCode::NOT_FOUND,
            "this node does not hand out the secrets key (it has none, or reads it from its own file)".into(),
        )
        .into_response(),
    }
}

/// Until this node holds the key: asks the other members for it every 2 s (only when
/// the key is kept in data directories; an external key is the operator's to give).
pub async fn run(ctx: NodeContext, cancel: CancellationToken) {
    const WORKER: &str = "secrets key";
    if ctx.keyring.stored.is_none() {
        ctx.workers.report(WORKER, crate::workers::Pass::Idle("read from its own file"));
        return;
    }
    loop {
        if let Some(key) = ctx.keyring.key() {
            ctx.workers.report(WORKER, crate::workers::Pass::Progress(format!("holding key {}", key.id())));
            return;
        }
        match fetch_from_members(&ctx).await {
            Ok(key) => {
                let id = key.id();
                match ctx.keyring.install(key) {
                    Ok(()) => tracing::info!(key = %id, "received the cluster's secrets key"),
                    Err(e) => ctx.workers.report(WORKER, crate::workers::Pass::Error(e.to_string())),
                }
            }
            Err(None) => ctx
                .workers
                .report(WORKER, crate::workers::Pass::Idle("waiting for another member to fetch the key from")),
            Err(Some(e)) => ctx.workers.report(WORKER, crate::workers::Pass::Error(e)),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// `Err(None)`: nobody to ask yet.
async fn fetch_from_members(ctx: &NodeContext) -> Result<ClusterKey, Option<String>> {
    use http_body_util::BodyExt;
    let state = ctx.control.state();
    let expected = state.secrets_key_id.clone();
    let mut errors = Vec::new();
    for node in state.nodes.values().filter(|n| n.id != ctx.identity.node_id && !n.down) {
        let req = hyper::Request::get(format!("https://{}/cluster/secrets-key", node.addr))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .map_err(|e| Some(e.to_string()))?;
        let got = tokio::time::timeout(Duration::from_secs(2), async {
            let resp = ctx.node_client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            if !status.is_success() {
                return Err(format!("HTTP {status}"));
            }
            let text = zeroize::Zeroizing::new(String::from_utf8_lossy(&body).into_owned());
            ClusterKey::decode(&text).ok_or_else(|| "not a key".to_string())
        })
        .await
        .unwrap_or_else(|_| Err("no answer within 2s".into()));
        match got {
            Ok(key) if expected.as_ref().is_none_or(|id| *id == key.id()) => return Ok(key),
            Ok(key) => errors.push(format!("{}: holds key {}, not the cluster's", node.name, key.id())),
            Err(e) => errors.push(format!("{}: {e}", node.name)),
        }
    }
    if errors.is_empty() {
        return Err(None);
    }
    Err(Some(format!("no member handed over the secrets key: {}", errors.join("; "))))
}
