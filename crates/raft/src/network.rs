//! Raft RPC between nodes: JSON over HTTPS POST to `/raft/<rpc>` on the peer's holdfast
//! port, with mutual TLS under the cluster CA (HTTP/2 when both sides offer it, so one
//! connection per peer carries every RPC).
//!
//! [`Network`] is the client side openraft drives; [`handle_rpc`] is the server side.
use std::future::Future;
use std::io::Cursor;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use openraft::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};
use openraft::errors::{NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetworkV2};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{NodeId, Raft, TypeConfig};

pub type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// An HTTPS client presenting this node's certificate (mutual TLS), for any
/// node-to-node call.
pub fn node_https_client(tls: rustls::ClientConfig) -> HttpsClient {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(Duration::from_millis(500)));
    http.set_nodelay(true);
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector)
}

/// Creates RPC clients for peers.
#[derive(Clone)]
pub struct Network {
    client: HttpsClient,
}

impl Network {
    /// `tls` is this node's mutual-TLS client configuration.
    pub fn new(tls: rustls::ClientConfig) -> Self {
        Network { client: node_https_client(tls) }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, _target: NodeId, node: &BasicNode) -> Peer {
        Peer { addr: node.addr.clone(), client: self.client.clone() }
    }
}

/// RPC client of one peer.
pub struct Peer {
    addr: String,
    client: HttpsClient,
}

impl Peer {
    async fn call<Req, Resp>(&self, rpc: &str, req: &Req, timeout: Duration) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let body = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let request = hyper::Request::post(format!("https://{}/raft/{rpc}", self.addr))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let fut = async {
            let resp = self.client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    RPCError::Unreachable(Unreachable::new(&e))
                } else {
                    RPCError::Network(NetworkError::new(&e))
                }
            })?;
            let status = resp.status();
            let bytes =
                resp.into_body().collect().await.map_err(|e| RPCError::Network(NetworkError::new(&e)))?.to_bytes();
            if !status.is_success() {
                return Err(RPCError::Network(NetworkError::from_string(format!(
                    "HTTP {status} from {}: {}",
                    self.addr,
                    String::from_utf8_lossy(&bytes)
                ))));
            }
            let res: Result<Resp, RaftError<TypeConfig>> =
                serde_json::from_slice(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
            res.map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => {
                Err(RPCError::Network(NetworkError::from_string(format!("timeout after {timeout:?} to {}", self.addr))))
            }
        }
    }
}

impl RaftNetworkV2<TypeConfig> for Peer {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call("append", &req, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        req: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call("vote", &req, option.hard_ttl()).await
    }

    async fn pre_vote(
        &mut self,
        req: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call("pre-vote", &req, option.hard_ttl()).await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Self::SnapshotData>,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let req = (vote, snapshot.meta, snapshot.snapshot.into_inner());
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            res = self.call("snapshot", &req, option.hard_ttl().max(Duration::from_secs(30))) => Ok(res?),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call("transfer-leader", &req, option.hard_ttl()).await
    }
}

/// Why an incoming RPC was not served.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("unknown raft rpc `{0}`")]
    UnknownRpc(String),
    #[error("malformed raft rpc body: {0}")]
    BadBody(#[from] serde_json::Error),
    #[error("raft is shutting down: {0}")]
    Fatal(String),
}

/// Serves one incoming RPC: decodes `body`, hands it to Raft, and returns the JSON
/// encoding of `Result<Response, RaftError>` that [`Peer`] expects.
pub async fn handle_rpc(raft: &Raft, rpc: &str, body: &[u8]) -> Result<Vec<u8>, RpcError> {
    fn wrap<T: Serialize>(r: Result<T, RaftError<TypeConfig>>) -> Result<Vec<u8>, RpcError> {
        Ok(serde_json::to_vec(&r)?)
    }
    match rpc {
        "append" => wrap(raft.append_entries(serde_json::from_slice(body)?).await),
        "vote" => wrap(raft.vote(serde_json::from_slice(body)?).await),
        "pre-vote" => wrap(raft.pre_vote(serde_json::from_slice(body)?).await),
        "snapshot" => {
            let (vote, meta, data): (VoteOf<TypeConfig>, SnapshotMetaOf<TypeConfig>, Vec<u8>) =
                serde_json::from_slice(body)?;
            let snapshot = SnapshotOf::<TypeConfig, _> { meta, snapshot: Cursor::new(data) };
            let r = raft.install_full_snapshot(vote, snapshot).await.map_err(RaftError::Fatal);
            wrap(r)
        }
        "transfer-leader" => {
            let req: TransferLeaderRequest<TypeConfig> = serde_json::from_slice(body)?;
            wrap(raft.handle_transfer_leader(req).await.map_err(RaftError::Fatal))
        }
        other => Err(RpcError::UnknownRpc(other.to_string())),
    }
}
