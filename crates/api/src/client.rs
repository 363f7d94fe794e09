//! A small HTTP/1 client for the API, used by the CLI and by tests.
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::{
    AcmeConfigRequest, ApiTokenCreated, ApiTokenRequest, ApiTokenView, ApiTokensResponse, CertsResponse,
    DatabaseUrlResponse, DatabasesResponse, DeployRequest, ErrorBody, EventsResponse, JobHistoryResponse, JobsResponse,
    NodeActionResponse, NodeLabelsRequest, NodeLabelsResponse, NodesResponse, PlanResponse, RoutesResponse, RunStarted,
    ScaleRequest, SecretHistoryResponse, SecretKeyRotate, SecretKeyRotated, SecretSetResponse, SecretsResponse,
    SettingsChange, SettingsView, StatusResponse, SwitchoverRequest, SwitchoverResponse, TokenRequest, TokenResponse,
    UsageResponse, WorkersResponse,
};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach holdfast at {url}: {message} (is `holdfast up` running there?)")]
    Connect { url: String, message: String },
    #[error("{message}")]
    Api { status: u16, message: String },
    #[error("unexpected answer from {url}: {message}")]
    Decode { url: String, message: String },
    #[error("invalid request: {0}")]
    Request(String),
}

/// An API client bound to a token and one node — or several, tried in turn when one
/// cannot be reached (`--server a,b,c`), so no one node is a point of failure for an
/// operator.
#[derive(Clone)]
pub struct Client {
    base: String,
    /// Every server given, in order (`base` among them).
    servers: Vec<String>,
    /// The index in `servers` of the one that answered last.
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    token: String,
    http: hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Sent as `x-holdfast-commit-timeout-ms`: how long the node may wait for the voters.
    commit_timeout: Option<Duration>,
}

impl Client {
    /// `base` like `https://127.0.0.1:7946`; the server is verified against the cluster
    /// CA certificate `ca_pem` (the node's `ca.pem`).
    pub fn new(base: impl Into<String>, token: impl Into<String>, ca_pem: &str) -> Result<Client, ClientError> {
        let tls = holdfast_pki::tls::cli_client_config(ca_pem)
            .map_err(|e| ClientError::Request(format!("cannot use the cluster CA certificate: {e}")))?;
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(Duration::from_secs(3)));
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let base = base.into().trim_end_matches('/').to_string();
        Ok(Client {
            servers: vec![base.clone()],
            current: Default::default(),
            base,
            token: token.into(),
            http: hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector),
            commit_timeout: None,
        })
    }

    /// Bounds how long each change may wait for the control plane's voters (the node's
    /// default is 10 s); past it the change fails, naming the voters that do not answer.
    pub fn with_commit_timeout(mut self, timeout: Duration) -> Client {
        self.commit_timeout = Some(timeout);
        self
    }

    /// `bases` tried in order, the last one that answered first; a request goes to the
    /// next only when the connection to one could not be made (so it was never sent).
    pub fn with_servers(bases: &[String], token: impl Into<String>, ca_pem: &str) -> Result<Client, ClientError> {
        let first = bases.first().ok_or_else(|| ClientError::Request("no server address given".into()))?;
        let mut c = Client::new(first.clone(), token, ca_pem)?;
        c.servers = bases.iter().map(|b| b.trim_end_matches('/').to_string()).collect();
        Ok(c)
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request (a JSON body, if any) and returns the raw response once its
    /// status is a success.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        self.send(method, path, body, "application/json").await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: &str,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        use std::sync::atomic::Ordering;
        let has_body = body.is_some();
        let body = Bytes::from(body.unwrap_or_default());
        let start = self.current.load(Ordering::Relaxed) % self.servers.len().max(1);
        let mut failures = Vec::new();
        let mut answered = None;
        for i in (0..self.servers.len()).map(|k| (start + k) % self.servers.len()) {
            let base = &self.servers[i];
            let mut builder = hyper::Request::builder()
                .method(method.clone())
                .uri(format!("{base}{path}"))
                .header("authorization", format!("Bearer {}", self.token));
            if let Some(t) = self.commit_timeout {
                builder = builder.header("x-holdfast-commit-timeout-ms", t.as_millis().to_string());
            }
            if has_body {
                builder = builder.header("content-type", content_type);
            }
            let req = builder.body(Full::new(body.clone())).map_err(|e| ClientError::Request(e.to_string()))?;
            match self.http.request(req).await {
                Ok(resp) => {
                    self.current.store(i, Ordering::Relaxed);
                    answered = Some(resp);
                    break;
                }
                // Never sent: the next server may take it.
                Err(e) if e.is_connect() && self.servers.len() > 1 => {
                    failures.push(format!("{base}: {}", error_chain(&e)))
                }
                Err(e) => return Err(ClientError::Connect { url: base.clone(), message: error_chain(&e) }),
            }
        }
        let Some(resp) = answered else {
            return Err(ClientError::Connect { url: self.servers.join(", "), message: failures.join("; ") });
        };
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let message = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(e) => e.error,
            Err(_) if status == StatusCode::UNAUTHORIZED => "the API token was refused".to_string(),
            Err(_) => format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)),
        };
        Err(ClientError::Api { status: status.as_u16(), message })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let body = body.map(serde_json::to_vec).transpose().map_err(|e| ClientError::Request(e.to_string()))?;
        let resp = self.send_raw(method, path, body).await?;
        Self::decode(&self.base, path, resp).await
    }

    async fn decode<T: DeserializeOwned>(
        base: &str,
        path: &str,
        resp: hyper::Response<Incoming>,
    ) -> Result<T, ClientError> {
        let url = format!("{base}{path}");
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Decode { url: url.clone(), message: e.to_string() })?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode { url, message: e.to_string() })
    }

    /// Sets the next version of `project/name` to `value` (sent as the raw body).
    pub async fn set_secret(
        &self,
        project: &str,
        name: &str,
        value: Vec<u8>,
    ) -> Result<SecretSetResponse, ClientError> {
        let path = format!("/v1/secrets/{project}/{name}");
        let resp = self.send(Method::PUT, &path, Some(value), "application/octet-stream").await?;
        Self::decode(&self.base, &path, resp).await
    }

    /// Rotates the cluster's secrets key: to `new_key` (a `--secrets-key-file` cluster),
    /// or to one the leader makes.
    pub async fn rotate_secrets_key(&self, new_key: Option<SecretKeyRotate>) -> Result<SecretKeyRotated, ClientError> {
        self.call(Method::POST, "/v1/secrets-key/rotate", new_key.as_ref()).await
    }

    pub async fn certs(&self) -> Result<CertsResponse, ClientError> {
        self.call(Method::GET, "/v1/certs", None::<&()>).await
    }

    pub async fn renew_cert(&self, host: &str) -> Result<CertsResponse, ClientError> {
        self.call(Method::POST, &format!("/v1/certs/{host}/renew"), None::<&()>).await
    }

    pub async fn set_acme(&self, req: &AcmeConfigRequest) -> Result<CertsResponse, ClientError> {
        self.call(Method::PUT, "/v1/acme", Some(req)).await
    }

    pub async fn routes(&self) -> Result<RoutesResponse, ClientError> {
        self.call(Method::GET, "/v1/routes", None::<&()>).await
    }

    pub async fn jobs(&self) -> Result<JobsResponse, ClientError> {
        self.call(Method::GET, "/v1/jobs", None::<&()>).await
    }

    pub async fn job(&self, name: &str) -> Result<JobHistoryResponse, ClientError> {
        self.call(Method::GET, &format!("/v1/jobs/{name}"), None::<&()>).await
    }

    pub async fn run_job(&self, name: &str) -> Result<RunStarted, ClientError> {
        self.call(Method::POST, &format!("/v1/jobs/{name}/run"), None::<&()>).await
    }

    /// Starts the log stream of one run; read the returned body frame by frame.
    pub async fn run_logs(&self, job: &str, run: u64, follow: bool) -> Result<hyper::Response<Incoming>, ClientError> {
        self.send_raw(Method::GET, &format!("/v1/jobs/{job}/runs/{run}/logs?follow={follow}"), None).await
    }

    pub async fn secrets(&self) -> Result<SecretsResponse, ClientError> {
        self.call(Method::GET, "/v1/secrets", None::<&()>).await
    }

    pub async fn secret_history(&self, project: &str, name: &str) -> Result<SecretHistoryResponse, ClientError> {
        self.call(Method::GET, &format!("/v1/secrets/{project}/{name}"), None::<&()>).await
    }

    pub async fn remove_secret(&self, project: &str, name: &str) -> Result<SecretHistoryResponse, ClientError> {
        self.call(Method::DELETE, &format!("/v1/secrets/{project}/{name}"), None::<&()>).await
    }

    pub async fn create_api_token(&self, req: &ApiTokenRequest) -> Result<ApiTokenCreated, ClientError> {
        self.call(Method::POST, "/v1/acl/tokens", Some(req)).await
    }

    pub async fn api_tokens(&self) -> Result<ApiTokensResponse, ClientError> {
        self.call(Method::GET, "/v1/acl/tokens", None::<&()>).await
    }

    pub async fn remove_api_token(&self, id: &str) -> Result<ApiTokenView, ClientError> {
        self.call(Method::DELETE, &format!("/v1/acl/tokens/{id}"), None::<&()>).await
    }

    pub async fn deploy(&self, req: &DeployRequest) -> Result<PlanResponse, ClientError> {
        self.call(Method::POST, "/v1/deploy", Some(req)).await
    }

    pub async fn status(&self) -> Result<StatusResponse, ClientError> {
        self.call(Method::GET, "/v1/status", None::<&()>).await
    }

    pub async fn restart(&self, service: &str) -> Result<PlanResponse, ClientError> {
        self.call(Method::POST, &format!("/v1/services/{}/restart", service), None::<&()>).await
    }

    pub async fn scale(&self, service: &str, replicas: u64) -> Result<PlanResponse, ClientError> {
        self.call(Method::POST, &format!("/v1/services/{}/scale", service), Some(&ScaleRequest { replicas })).await
    }

    pub async fn remove(&self, service: &str) -> Result<PlanResponse, ClientError> {
        self.call(Method::DELETE, &format!("/v1/services/{}", service), None::<&()>).await
    }

    /// Starts a log stream of [`LogItem`](crate::types::LogItem)s, one JSON object per
    /// line; read the returned body frame by frame.
    pub async fn logs(&self, service: &str, q: &LogsQuery) -> Result<hyper::Response<Incoming>, ClientError> {
        self.send_raw(Method::GET, &format!("/v1/services/{service}/logs?{}", q.to_query()), None).await
    }

    pub async fn create_token(&self, ttl_ms: u64) -> Result<TokenResponse, ClientError> {
        self.call(Method::POST, "/v1/tokens", Some(&TokenRequest { ttl_ms })).await
    }

    pub async fn databases(&self) -> Result<DatabasesResponse, ClientError> {
        self.call(Method::GET, "/v1/databases", None::<&()>).await
    }

    /// A connection URL of a database endpoint (`rw`, `ro`, `r`; `admin` for the
    /// superuser on `rw`), with the password.
    pub async fn database_url(
        &self,
        name: &str,
        endpoint: &str,
        user: Option<&str>,
    ) -> Result<DatabaseUrlResponse, ClientError> {
        let user = user.map(|u| format!("&user={u}")).unwrap_or_default();
        self.call(Method::GET, &format!("/v1/databases/{name}/url?endpoint={endpoint}{user}"), None::<&()>).await
    }

    pub async fn switchover(&self, name: &str, req: &SwitchoverRequest) -> Result<SwitchoverResponse, ClientError> {
        self.call(Method::POST, &format!("/v1/databases/{name}/switchover"), Some(req)).await
    }

    pub async fn nodes(&self) -> Result<NodesResponse, ClientError> {
        self.call(Method::GET, "/v1/nodes", None::<&()>).await
    }

    pub async fn cordon(&self, node: &str) -> Result<NodeActionResponse, ClientError> {
        self.call(Method::POST, &format!("/v1/nodes/{node}/cordon"), None::<&()>).await
    }

    pub async fn settings(&self) -> Result<SettingsView, ClientError> {
        self.call(Method::GET, "/v1/cluster/settings", None::<&()>).await
    }

    pub async fn change_settings(&self, change: &SettingsChange) -> Result<SettingsView, ClientError> {
        self.call(Method::PUT, "/v1/cluster/settings", Some(change)).await
    }

    pub async fn drain(&self, node: &str) -> Result<NodeActionResponse, ClientError> {
        self.call(Method::POST, &format!("/v1/nodes/{node}/drain"), None::<&()>).await
    }

    pub async fn uncordon(&self, node: &str) -> Result<NodeActionResponse, ClientError> {
        self.call(Method::POST, &format!("/v1/nodes/{node}/uncordon"), None::<&()>).await
    }

    /// Sets and removes user labels of a node; replicas whose node selector no longer
    /// matches move.
    pub async fn label_node(&self, node: &str, req: &NodeLabelsRequest) -> Result<NodeLabelsResponse, ClientError> {
        self.call(Method::POST, &format!("/v1/nodes/{node}/labels"), Some(req)).await
    }

    pub async fn remove_node(&self, node: &str) -> Result<NodeActionResponse, ClientError> {
        self.call(Method::DELETE, &format!("/v1/nodes/{node}"), None::<&()>).await
    }

    /// Events since `since_ms` (ms since the epoch), at most `limit` (the newest), from
    /// every node's journal.
    pub async fn events(&self, since_ms: u64, limit: usize) -> Result<EventsResponse, ClientError> {
        self.call(Method::GET, &format!("/v1/events?since_ms={since_ms}&limit={limit}"), None::<&()>).await
    }

    /// Every instance's CPU and memory, now and over the last hour (`samples` points of
    /// history each, 0 for none), optionally of one service or one node.
    pub async fn usage(
        &self,
        service: Option<&str>,
        node: Option<&str>,
        samples: usize,
    ) -> Result<UsageResponse, ClientError> {
        let mut q = format!("/v1/usage?samples={samples}");
        if let Some(s) = service {
            q.push_str(&format!("&service={}", query_escape(s)));
        }
        if let Some(n) = node {
            q.push_str(&format!("&node={}", query_escape(n)));
        }
        self.call(Method::GET, &q, None::<&()>).await
    }

    /// The background loops of the node this client talks to.
    pub async fn workers(&self) -> Result<WorkersResponse, ClientError> {
        self.call(Method::GET, "/v1/workers", None::<&()>).await
    }

    /// Asks the node to re-execute its binary in place (upgrade); workloads keep running.
    pub async fn reexec(&self) -> Result<(), ClientError> {
        self.send_raw(Method::POST, "/v1/node/reexec", None).await.map(|_| ())
    }
}

/// An error with all its sources, `outer: inner: innermost` (for one-line reports).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// What part of a log to read: the last `tail` lines per instance (all when `None` and
/// `since_ms` is set, else 100), lines written at or after `since_ms`, lines containing
/// `grep` (a regular expression), and whether to keep following.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogsQuery {
    #[serde(default)]
    pub tail: Option<usize>,
    #[serde(default)]
    pub since_ms: Option<u64>,
    #[serde(default)]
    pub grep: Option<String>,
    #[serde(default)]
    pub follow: bool,
}

impl LogsQuery {
    /// The query string (without `?`).
    pub fn to_query(&self) -> String {
        let mut parts = vec![format!("follow={}", self.follow)];
        if let Some(t) = self.tail {
            parts.push(format!("tail={t}"));
        }
        if let Some(s) = self.since_ms {
            parts.push(format!("since_ms={s}"));
        }
        if let Some(g) = &self.grep {
            parts.push(format!("grep={}", query_escape(g)));
        }
        parts.join("&")
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986), for a query value.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
