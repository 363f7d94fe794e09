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

/// This node's keys (the current one, and any it held before a rotation, in memory
/// only) and where the current one is kept.
pub struct Keyring {
    /// Oldest first.
    keys: RwLock<Vec<ClusterKey>>,
    /// `Some(path)`: kept in the data directory (fetched keys are written there, and the
    /// key may be handed to other members). `None`: an external file.
    stored: Option<PathBuf>,
    /// The external key file (`--secrets-key-file`), read again when the cluster moves to
    /// a key this node lacks (the operator put the new key there).
    external: Option<PathBuf>,
}

/// Prefix of the token a job run gets.
pub const JOB_TOKEN_PREFIX: &str = "hfjob1.";
const JOB_TOKEN_PURPOSE: &str = "holdfast job token v1";

/// The file a rotating leader writes the new key to before it proposes anything, so a
/// crash between the two never loses the key the cluster moved to.
const NEXT_KEY_FILE: &str = "secrets.key.next";

impl Keyring {
    /// Loads the key: from `external` if given (it must exist), else the data directory's
    /// file, created on the node that founds the cluster (plus a rotation's new key, if
    /// the node stopped in the middle of one).
    pub fn load(data_dir: &Path, external: Option<&Path>, founder: bool) -> Result<Keyring, NodeError> {
        let err = |e: SecretError| NodeError::DataDir { path: data_dir.display().to_string(), message: e.to_string() };
        if let Some(path) = external {
            let key = ClusterKey::load(path).map_err(err)?;
            tracing::info!(key = %key.id(), file = %path.display(), "secrets key read from its own file (not kept in the data directory)");
            return Ok(Keyring { keys: RwLock::new(vec![key]), stored: None, external: Some(path.to_path_buf()) });
        }
        let path = data_dir.join(holdfast_secrets::KEY_FILE);
        let mut keys = Vec::new();
        if path.exists() {
            keys.push(ClusterKey::load(&path).map_err(err)?);
        } else if founder {
            let key = ClusterKey::generate().map_err(err)?;
            key.write_new(&path).map_err(err)?;
            tracing::info!(key = %key.id(), "created the cluster's secrets key");
            keys.push(key);
        }
        let next = data_dir.join(NEXT_KEY_FILE);
        if next.exists() {
            keys.push(ClusterKey::load(&next).map_err(err)?);
        }
        Ok(Keyring { keys: RwLock::new(keys), stored: Some(path), external: None })
    }

    /// The newest key this node holds.
    pub fn key(&self) -> Option<ClusterKey> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).last().cloned()
    }

    /// The key with this id, if this node holds it.
    pub fn key_by_id(&self, id: &str) -> Option<ClusterKey> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).iter().find(|k| k.id() == id).cloned()
    }

    /// The key values are sealed under now: the cluster's (`state_id`, once recorded),
    /// else the newest held.
    fn current(&self, state_id: Option<&str>) -> Result<ClusterKey, String> {
        match state_id {
            Some(id) => self.key_by_id(id).ok_or_else(|| {
                format!("this node does not hold the cluster's secrets key {id} yet (it fetches it from another member; see `holdfast workers`)")
            }),
            None => self.key().ok_or_else(|| self.missing()),
        }
    }

    /// The key with `id`, if this node may hand it to another member (it keeps its key in
    /// its data directory; an external key is never handed out).
    pub fn shareable(&self, id: Option<&str>) -> Option<ClusterKey> {
        self.stored.as_ref()?;
        match id {
            Some(id) => self.key_by_id(id),
            None => self.key(),
        }
    }

    /// Takes a key fetched from another member: kept (it becomes `secrets.key`, the
    /// cluster having moved to it) and used from now on.
    fn install(&self, key: ClusterKey) -> Result<(), SecretError> {
        if let Some(path) = &self.stored {
            key.write_replacing(path)?;
        }
        self.keys.write().unwrap_or_else(|e| e.into_inner()).push(key);
        Ok(())
    }

    fn missing(&self) -> String {
        match &self.stored {
            Some(_) => "this node has not received the cluster's secrets key yet (it fetches it from another node; see `holdfast workers`)".into(),
            None => "this node has no secrets key".into(),
        }
    }

    /// Seals `value` as version `version` of `project/name` under the cluster's key.
    pub fn seal(
        &self,
        state_id: Option<&str>,
        project: &str,
        name: &str,
        version: u64,
        value: &[u8],
    ) -> Result<holdfast_secrets::Sealed, String> {
        let key = self.current(state_id)?;
        let ctx = holdfast_state::secrets::seal_context(project, name, version);
        holdfast_secrets::seal(&key, &ctx, value).map_err(|e| e.to_string())
    }

    /// The token a run of `job` gets while it is active (`hfjob1.<job>.<run>.<tag>`): an
    /// HMAC under the cluster key, so any node can check it and no state is written.
    pub fn job_token(&self, state_id: Option<&str>, job: &str, run: u64) -> Result<String, String> {
        let key = self.current(state_id)?;
        Ok(format!("{JOB_TOKEN_PREFIX}{job}.{run}.{}", key.tag(JOB_TOKEN_PURPOSE, &format!("{job}#{run}"))))
    }

    /// The (job, run) a job token was made for, if it was made with a key this node holds.
    pub fn check_job_token(&self, token: &str) -> Option<(String, u64)> {
        let rest = token.strip_prefix(JOB_TOKEN_PREFIX)?;
        let (job_run, tag) = rest.rsplit_once('.')?;
        let (job, run) = job_run.rsplit_once('.')?;
        let run: u64 = run.parse().ok()?;
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
        keys.iter()
            .any(|k| crate::api::acl::same_secret(tag, &k.tag(JOB_TOKEN_PURPOSE, &format!("{job}#{run}"))))
            .then(|| (job.to_string(), run))
    }

    /// Opens a sealed version with whichever held key it was sealed under.
    pub fn open(&self, context: &str, sealed: &holdfast_secrets::Sealed) -> Result<Plain, String> {
        let key = self.key_by_id(&sealed.key_id).or_else(|| self.key()).ok_or_else(|| self.missing())?;
        holdfast_secrets::open(&key, context, sealed).map_err(|e| e.to_string())
    }

    /// A rotation's first step, on the leader: the new key — made here for keys kept in
    /// data directories (written to `secrets.key.next` before anything is resealed or
    /// proposed), or the one the operator gives for a `--secrets-key-file` cluster (held
    /// in memory; every node reads it from its own file once the cluster moved to it).
    pub fn prepare_rotation(&self, data_dir: &Path, given: Option<ClusterKey>) -> Result<ClusterKey, String> {
        let key = match (&self.stored, given) {
            (None, None) => {
                return Err("this cluster reads its secrets key from --secrets-key-file: make a new key with `holdfast secret keygen NEW`, put NEW in place of the key file on every node (each keeps using the key it read at start until the cluster moves), then run `holdfast secret rotate-key --new-key-file NEW`".into())
            }
            (None, Some(key)) => key,
            (Some(_), given) => match given {
                Some(k) => k,
                None => ClusterKey::generate().map_err(|e| e.to_string())?,
            },
        };
        if self.key_by_id(&key.id()).is_some() {
            return Err(format!("the cluster already uses key {}; give a new one", key.id()));
        }
        if self.stored.is_some() {
            let next = data_dir.join(NEXT_KEY_FILE);
            let _ = std::fs::remove_file(&next);
            key.write_new(&next).map_err(|e| e.to_string())?;
        }
        self.keys.write().unwrap_or_else(|e| e.into_inner()).push(key.clone());
        Ok(key)
    }

    /// After the resealed secrets were committed: the new key becomes `secrets.key`.
    pub fn finish_rotation(&self, data_dir: &Path) -> Result<(), String> {
        let Some(path) = &self.stored else { return Ok(()) };
        std::fs::rename(data_dir.join(NEXT_KEY_FILE), path).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// A rotation that was not committed: the new key is forgotten.
    pub fn abandon_rotation(&self, data_dir: &Path, key: &ClusterKey) {
        if self.stored.is_some() {
            let _ = std::fs::remove_file(data_dir.join(NEXT_KEY_FILE));
        }
        self.keys.write().unwrap_or_else(|e| e.into_inner()).retain(|k| k.id() != key.id());
    }

    /// For a `--secrets-key-file` node that lacks the cluster's key `wanted`: reads the
    /// file again and takes the key if it is that one.
    fn reload_external(&self, wanted: &str) -> Result<ClusterKey, String> {
        let Some(path) = &self.external else { return Err("no key file".into()) };
        let key = ClusterKey::load(path).map_err(|e| e.to_string())?;
        if key.id() != wanted {
            return Err(format!(
                "the cluster moved to secrets key {wanted}, but {} holds key {}: put the new key file there",
                path.display(),
                key.id()
            ));
        }
        self.keys.write().unwrap_or_else(|e| e.into_inner()).push(key.clone());
        Ok(key)
    }
}

/// Opens the current version of stored secret `key` (`project/name`, the reserved
/// `_acme/...` ones included).
pub fn open_current(keyring: &Keyring, state: &holdfast_state::ClusterState, key: &str) -> Result<Plain, String> {
    let rec = state.secrets.get(key).ok_or_else(|| format!("secret {key} does not exist"))?;
    let current = rec.current().ok_or_else(|| format!("secret {key} has no value yet"))?;
    let sealed = current
        .sealed
        .as_ref()
        .ok_or_else(|| format!("version {} of secret {key} is not readable", current.version))?;
    let (project, name) = key.split_once('/').ok_or_else(|| format!("`{key}` is not project/name"))?;
    keyring.open(&holdfast_state::secrets::seal_context(project, name, current.version), sealed)
}

/// Opens the secrets this node's instances read, from the replicated state.
pub struct StateSecrets {
    pub control: holdfast_raft::ControlPlane,
    pub keyring: std::sync::Arc<Keyring>,
}

impl holdfast_agent::SecretSource for StateSecrets {
    fn open(&self, secret: &str, version: u64) -> Result<Plain, String> {
        let state = self.control.state();
        if let Some(job) = secret.strip_prefix(crate::workloads::JOB_TOKEN_SECRET).and_then(|s| s.strip_prefix('/')) {
            let token = self.keyring.job_token(state.secrets_key_id.as_deref(), job, version)?;
            return Ok(zeroize::Zeroizing::new(token.into_bytes()));
        }
        let (project, name) = holdfast_state::secrets::parse_key(secret)?;
        let rec = state.secrets.get(secret).ok_or_else(|| format!("there is no secret {secret}"))?;
        let sealed = rec.readable(version).ok_or_else(|| {
            format!(
                "version {version} of {secret} is retired (only the current and the previous version stay readable)"
            )
        })?;
        self.keyring.open(&holdfast_state::secrets::seal_context(project, name, version), sealed)
    }
}

/// `GET /cluster/secrets-key[?id=<key id>]` (member certificate): the key, to a member
/// that lacks it, when this node keeps it in its data directory.
pub async fn serve_key(
    axum::extract::State(ctx): axum::extract::State<NodeContext>,
    axum::extract::Query(q): axum::extract::Query<std::collections::BTreeMap<String, String>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match ctx.keyring.shareable(q.get("id").map(String::as_str)) {
        Some(key) => key.encode().to_string().into_response(),
        None => crate::api::ApiError(
            axum::http::StatusCode::NOT_FOUND,
            "this node does not hand out the secrets key (it has none, or reads it from its own file)".into(),
        )
        .into_response(),
    }
}

/// Keeps this node holding the cluster's current key: at start when it has none, and
/// after a rotation (the state names a key it lacks), it asks the other members every
/// 2 s (only when keys are kept in data directories; an external key is the operator's
/// to give).
pub async fn run(ctx: NodeContext, cancel: CancellationToken) {
    let mut states = ctx.control.subscribe();
    loop {
        let retry = if ctx.keyring.stored.is_none() {
            external_pass(&ctx)
        } else {
            match fetch_pass(&ctx).await {
                Some(retry) => retry,
                None => continue,
            }
        };
        let pause = if retry { Duration::from_secs(2) } else { Duration::from_secs(3600) };
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = states.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

const WORKER: &str = "secrets key";

/// An external key is the operator's to give: the file is read again when the cluster
/// moves to a key this node lacks. Whether to look again soon.
fn external_pass(ctx: &NodeContext) -> bool {
    let wanted = ctx.control.state().secrets_key_id.clone();
    match wanted.filter(|id| ctx.keyring.key_by_id(id).is_none()) {
        None => {
            ctx.workers.report(WORKER, crate::workers::Pass::Idle("read from its own file"));
            false
        }
        Some(id) => match ctx.keyring.reload_external(&id) {
            Ok(key) => {
                tracing::info!(key = %key.id(), "took the cluster's new secrets key from the key file");
                false
            }
            Err(e) => {
                ctx.workers.report(WORKER, crate::workers::Pass::Error(e));
                true
            }
        },
    }
}

/// A key kept in data directories: fetched from a member when this node lacks the one
/// the cluster uses. Whether to look again soon; `None`: it just came, look at once.
async fn fetch_pass(ctx: &NodeContext) -> Option<bool> {
    let wanted = ctx.control.state().secrets_key_id.clone();
    let held = match &wanted {
        Some(id) => ctx.keyring.key_by_id(id),
        None => ctx.keyring.key(),
    };
    if let Some(key) = held {
        ctx.workers.report(WORKER, crate::workers::Pass::Progress(format!("holding key {}", key.id())));
        return Some(false);
    }
    match fetch_from_members(ctx, wanted.as_deref()).await {
        Ok(key) => {
            let id = key.id();
            match ctx.keyring.install(key) {
                Ok(()) => {
                    tracing::info!(key = %id, "received the cluster's secrets key");
                    None
                }
                Err(e) => {
                    ctx.workers.report(WORKER, crate::workers::Pass::Error(e.to_string()));
                    Some(true)
                }
            }
        }
        Err(None) => {
            ctx.workers.report(WORKER, crate::workers::Pass::Idle("waiting for another member to fetch the key from"));
            Some(true)
        }
        Err(Some(e)) => {
            ctx.workers.report(WORKER, crate::workers::Pass::Error(e));
            Some(true)
        }
    }
}

/// `Err(None)`: nobody to ask yet.
async fn fetch_from_members(ctx: &NodeContext, expected: Option<&str>) -> Result<ClusterKey, Option<String>> {
    use http_body_util::BodyExt;
    let state = ctx.control.state();
    let query = expected.map(|id| format!("?id={id}")).unwrap_or_default();
    let mut errors = Vec::new();
    for node in state.nodes.values().filter(|n| n.id != ctx.identity.node_id && !n.down) {
        let req = hyper::Request::get(format!("https://{}/cluster/secrets-key{query}", node.addr))
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
            Ok(key) if expected.is_none_or(|id| id == key.id()) => return Ok(key),
            Ok(key) => errors.push(format!("{}: holds key {}, not the cluster's", node.name, key.id())),
            Err(e) => errors.push(format!("{}: {e}", node.name)),
        }
    }
    if errors.is_empty() {
        return Err(None);
    }
    Err(Some(format!("no member handed over the secrets key: {}", errors.join("; "))))
}
