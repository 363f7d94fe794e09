//! Cross-node service traffic: a node reaches instances on other nodes through those
//! nodes' holdfast port, over mutual TLS, so only that one port must be reachable between
//! machines and workload ports stay on loopback.
//!
//! For every remote (node, instance port) this node opens a local listener on
//! 127.0.0.1 (the "tunnel entrance"); the proxy and ingress use it as the endpoint
//! address. Each accepted connection becomes one `GET /cluster/tunnel/{port}` with
//! `Upgrade: holdfast-tunnel` to the remote node, which checks that the port belongs to
//! one of its instances, answers 101, and splices the bytes to 127.0.0.1:port.
//! (One TLS connection per tunneled connection for now; multiplexing them over HTTP/2
//! streams is the next step.)
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::Empty;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_util::sync::CancellationToken;

use crate::server::ApiError;
use crate::NodeContext;

const PROTOCOL: &str = "holdfast-tunnel";

/// `GET /cluster/tunnel/{port}` (node-to-node): splices an upgraded connection to a local
/// instance port.
pub async fn accept(State(ctx): State<NodeContext>, Path(port): Path<u16>, mut req: Request) -> Response {
    let ours = ctx.agent.status().iter().any(|s| s.ports.values().any(|p| *p == port));
    if !ours {
        return ApiError(StatusCode::NOT_FOUND, format!("no instance listens on port {port} here")).into_response();
    }
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "tunnel upgrade failed");
                return;
            }
        };
        let mut remote = TokioIo::new(upgraded);
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(mut local) => {
                let _ = local.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut remote, &mut local).await;
            }
            Err(e) => tracing::debug!(port, error = %e, "tunnel: local instance refused"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, PROTOCOL)
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Tunnel entrances of this node, by (remote node address, remote port).
#[derive(Clone)]
pub struct Tunnels {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    entrances: Arc<Mutex<HashMap<(String, u16), SocketAddr>>>,
    cancel: CancellationToken,
}

impl Tunnels {
    /// `tls`: this node's mutual-TLS client configuration.
    pub fn new(tls: rustls::ClientConfig, cancel: CancellationToken) -> Tunnels {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(Duration::from_millis(500)));
        http.set_nodelay(true);
        http.enforce_http(false);
        // HTTP/1.1 only: the tunnel is an HTTP/1.1 upgrade.
        let conn = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        Tunnels {
            client: Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(conn),
            entrances: Default::default(),
            cancel,
        }
    }

    /// The local address that leads to `port` on the node at `node_addr`, opening the
    /// entrance on first use.
    pub fn entrance(&self, node_addr: &str, port: u16) -> Option<SocketAddr> {
        let key = (node_addr.to_string(), port);
        let mut map = self.entrances.lock().ok()?;
        if let Some(a) = map.get(&key) {
            return Some(*a);
        }
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", 0)).ok()?;
        std_listener.set_nonblocking(true).ok()?;
        let local = std_listener.local_addr().ok()?;
        let listener = tokio::net::TcpListener::from_std(std_listener).ok()?;
        map.insert(key, local);
        let this = self.clone();
        let node_addr = node_addr.to_string();
        tokio::spawn(async move {
            loop {
                let (conn, _) = tokio::select! {
                    _ = this.cancel.cancelled() => return,
                    a = listener.accept() => match a { Ok(v) => v, Err(_) => continue },
                };
                let this = this.clone();
                let node_addr = node_addr.clone();
                tokio::spawn(async move {
                    if let Err(e) = this.carry(conn, &node_addr, port).await {
                        tracing::debug!(node = %node_addr, port, error = %e, "tunnel failed");
                    }
                });
            }
        });
        Some(local)
    }

    async fn carry(&self, conn: tokio::net::TcpStream, node_addr: &str, port: u16) -> Result<(), String> {
        let _ = conn.set_nodelay(true);
        let req = hyper::Request::get(format!("https://{node_addr}/cluster/tunnel/{port}"))
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, PROTOCOL)
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(Duration::from_secs(2), self.client.request(req))
            .await
            .map_err(|_| "timeout".to_string())?
            .map_err(|e| e.to_string())?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(format!("HTTP {}", resp.status()));
        }
        let upgraded = hyper::upgrade::on(resp).await.map_err(|e| e.to_string())?;
        let mut remote = TokioIo::new(upgraded);
        let mut local = conn;
        tokio::io::copy_bidirectional(&mut local, &mut remote).await.map_err(|e| e.to_string())?;
        Ok(())
    }
}
