//! Cross-node service traffic: a node reaches instances on other nodes through those nodes'
//! holdfast port, over mutual TLS, so only that one port must be reachable between
//! machines and workload ports stay on loopback.
//!
//! Client side: [`TunnelDialer`] is the `holdfast-net` dialer of this node. A local
//! endpoint is a plain TCP connect; an endpoint on another node is a new stream on this
//! node's one HTTP/2 link to that node ([`crate::links`]): an extended CONNECT (RFC 8441,
//! `:protocol holdfast-tunnel`) to `/cluster/tunnel/{port}`. No loopback listeners, no
//! connection per tunneled connection.
//!
//! Server side: [`accept`] answers that CONNECT only for a member node (the route needs
//! a cluster certificate that was not revoked) and only for a port of one of this node's
//! instances; it connects to `127.0.0.1:port` *before* answering 200, so a dead instance
//! is a failed stream open on the caller's side — a connect error that the proxy and the
//! ingress retry on another endpoint — and then splices the stream and the connection.
//! The older form, an HTTP/1.1 `GET` with `Upgrade: holdfast-tunnel` (answered 101), is
//! still accepted, so nodes of the previous version keep reaching this one during a
//! rolling upgrade.
use std::io;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, Method, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::Json;
use holdfast_net::{Conn, Dialer, Target, TcpDialer};
use hyper_util::rt::TokioIo;

use crate::api::ApiError;
use crate::links::{Links, LinksView};
use crate::NodeContext;

/// The tunnel protocol: HTTP/2 `:protocol` of the extended CONNECT (and the HTTP/1.1
/// `Upgrade` token of the older form).
pub const PROTOCOL: &str = "holdfast-tunnel";

/// How the request asks for a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// HTTP/2 extended CONNECT with `:protocol holdfast-tunnel`: answered 200.
    Connect,
    /// HTTP/1.1 GET with `Upgrade: holdfast-tunnel`: answered 101.
    Upgrade,
}

/// Which form of tunnel request this is, if any (pure).
pub fn ask(method: &Method, version: Version, protocol: Option<&str>, upgrade: Option<&str>) -> Option<Ask> {
    let is = |v: Option<&str>| v.is_some_and(|v| v.eq_ignore_ascii_case(PROTOCOL));
    if method == Method::CONNECT && version == Version::HTTP_2 && is(protocol) {
        Some(Ask::Connect)
    } else if method == Method::GET && version == Version::HTTP_11 && is(upgrade) {
        Some(Ask::Upgrade)
    } else {
        None
    }
}

/// `CONNECT /cluster/tunnel/{port}` (and the older `GET` + upgrade), node-to-node: a
/// stream spliced to a local instance port.
pub async fn accept(State(ctx): State<NodeContext>, Path(port): Path<u16>, mut req: Request) -> Response {
    let protocol = req.extensions().get::<hyper::ext::Protocol>().map(|p| p.as_str().to_string());
    let upgrade = req.headers().get(header::UPGRADE).and_then(|v| v.to_str().ok());
    let Some(ask) = ask(req.method(), req.version(), protocol.as_deref(), upgrade) else {
        return ApiError(
            StatusCode::BAD_REQUEST,
            format!("a tunnel is an HTTP/2 CONNECT with :protocol {PROTOCOL} (or an HTTP/1.1 upgrade to it)"),
        )
        .into_response();
    };
    let ours = ctx.agent.status().iter().any(|s| s.ports.values().any(|p| *p == port));
    if !ours {
        return ApiError(StatusCode::NOT_FOUND, format!("no instance listens on port {port} here")).into_response();
    }
    // Connect first: a refused instance is a failed open for the caller, who tries another.
    let connect = tokio::net::TcpStream::connect(("127.0.0.1", port));
    let mut local = match tokio::time::timeout(ctx.links.timing().open_timeout, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return ApiError(StatusCode::BAD_GATEWAY, format!("the instance on port {port} refused: {e}"))
                .into_response()
        }
        Err(_) => {
            return ApiError(StatusCode::GATEWAY_TIMEOUT, format!("the instance on port {port} did not accept"))
                .into_response()
        }
    };
    let _ = local.set_nodelay(true);
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let mut remote = TokioIo::new(upgraded);
                if let Err(e) = tokio::io::copy_bidirectional(&mut remote, &mut local).await {
                    tracing::trace!(port, error = %e, "tunnel: stream ended with an error");
                }
            }
            Err(e) => tracing::debug!(port, error = %e, "tunnel: upgrade failed"),
        }
    });
    let resp = match ask {
        Ask::Connect => Response::builder().status(StatusCode::OK).body(Body::empty()),
        Ask::Upgrade => Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, PROTOCOL)
            .body(Body::empty()),
    };
    resp.unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// `GET /cluster/links` (node-to-node): this node's links, their state and counters. Also
/// the first request of every new link, proving the certificate is accepted.
pub async fn links(State(ctx): State<NodeContext>) -> Json<LinksView> {
    Json(ctx.links.view())
}

/// The node's dialer for `holdfast-net`: TCP to local instances, a tunnel stream to
/// instances on other nodes.
pub struct TunnelDialer(pub Links);

#[async_trait::async_trait]
impl Dialer for TunnelDialer {
    async fn dial(&self, target: &Target) -> io::Result<Conn> {
        match target {
            Target::Addr(addr) => TcpDialer::connect(*addr).await,
            Target::Remote { peer, port } => Ok(Conn::other(self.0.open(peer, *port).await?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_requests() {
        let (h1, h2) = (Version::HTTP_11, Version::HTTP_2);
        let p = Some(PROTOCOL);
        assert_eq!(ask(&Method::CONNECT, h2, p, None), Some(Ask::Connect));
        assert_eq!(ask(&Method::CONNECT, h2, Some("HOLDFAST-TUNNEL"), None), Some(Ask::Connect));
        assert_eq!(ask(&Method::GET, h1, None, p), Some(Ask::Upgrade));
        assert_eq!(ask(&Method::CONNECT, h2, Some("websocket"), None), None, "another protocol");
        assert_eq!(ask(&Method::CONNECT, h2, None, None), None, "plain CONNECT");
        assert_eq!(ask(&Method::GET, h1, None, Some("websocket")), None);
        assert_eq!(ask(&Method::GET, h2, None, p), None, "no upgrade in HTTP/2");
        assert_eq!(ask(&Method::POST, h1, None, p), None);
    }
}
