//! The HTTP ingress: HTTP/1.1 (keep-alive) and HTTP/2 prior knowledge (h2c) on one listener,
//! routing by host and path prefix (`route.rs`) to a ready endpoint of the route's service
//! port over pooled HTTP/1.1 connections (`client.rs`, opened by the configured dialer, so
//! an endpoint on another machine is reached the same way), with WebSocket pass-through.
//!
//! Retries: when the request could not be sent (connect refused, timed out, or a pooled
//! connection found closed before the request was written) it goes to another ready endpoint
//! whatever the method, body included. When it failed after being sent, only GET, HEAD and
//! OPTIONS without a body are retried; anything else gets a 502 (it may have had an effect).
//! A stale pooled connection is retried once on a fresh connection to the same endpoint before
//! the endpoint counts as failed.
//!
//! Answers the ingress makes itself are short plain text: 404 (no route for the host and
//! path), 503 (route found, no ready endpoint) and 502 (every endpoint failed).

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Empty, Full};
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::http::request::Parts;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::balance::{now_ms, ActiveGuard, Pool, Tried};
use crate::client::{self, ReqBody, RespBody};
use crate::headers;
use crate::net::{DialError, Shared};
use crate::route::{match_route, normalize_host};
use crate::stats::inc;

/// Accepts and serves connections until `cancel`; open connections then finish their
/// in-flight requests and close (graceful shutdown).
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, cancel: CancellationToken) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // writev(false): hyper flattens head and body into one buffer written with send(2),
    // cheaper than writev(2) for the small messages that dominate.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(30)).writev(false);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    loop {
        let (stream, peer) = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::warn!(%error, "http ingress: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (shared, builder, cancel) = (shared.clone(), builder.clone(), cancel.clone());
        tokio::spawn(async move {
            // The client's address as it goes into X-Forwarded-For, made once per connection.
            let client = match HeaderValue::from_str(&peer.ip().to_string()) {
                Ok(v) => v,
                Err(_) => HeaderValue::from_static("unknown"),
            };
            let svc = service_fn(move |req| {
                let (shared, client) = (shared.clone(), client.clone());
                async move { Ok::<_, Infallible>(handle(req, &client, &shared).await) }
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                () = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "http ingress: connection ended with an error");
            }
        });
    }
}

async fn handle(req: Request<Incoming>, client: &HeaderValue, shared: &Arc<Shared>) -> Response<RespBody> {
    let resp = route_and_forward(req, client, shared).await;
    shared.stats.http_status(resp.status().as_u16());
    resp
}

fn text(status: StatusCode, body: String) -> Response<RespBody> {
    let mut resp = Response::new(RespBody::Local(Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

async fn route_and_forward(
    mut req: Request<Incoming>,
    client: &HeaderValue,
    shared: &Arc<Shared>,
) -> Response<RespBody> {
    let compiled = shared.current();
    // HTTP/2 (and HTTP/1.1 absolute-form) carry the host in the URI authority.
    let host_value = match req.uri().authority() {
        Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
        None => req.headers().get(HOST).cloned(),
    };
    let host = normalize_host(host_value.as_ref().and_then(|v| v.to_str().ok()).unwrap_or(""));
    let path = req.uri().path();
    let Some(ri) = match_route(&compiled.table.routes, &host, path) else {
        return text(StatusCode::NOT_FOUND, format!("no route for host {host:?} path {path:?}\n"));
    };
    let route = &compiled.table.routes[ri];
    let label = || format!("{}{}", route.host, route.path);
    let pool = match &compiled.route_pools[ri] {
        Some(pool) if !pool.backends.is_empty() => pool.clone(),
        Some(_) => {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no ready instance of service {:?} (route {})\n", route.service, label()),
            );
        }
        None => {
            let why = match compiled.table.find_service(&route.service) {
                Some(_) => format!("service {:?} has no port {:?}", route.service, route.port),
                None => format!("unknown service {:?}", route.service),
            };
            return text(StatusCode::SERVICE_UNAVAILABLE, format!("{why} (route {})\n", label()));
        }
    };
    drop(compiled);

    let upgrade = headers::is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    headers::forward_request(&mut parts.headers, client, host_value.as_ref(), upgrade);
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        parts.uri = parts.uri.path_and_query().cloned().map_or_else(|| Uri::from_static("/"), Uri::from);
    }
    parts.version = Version::HTTP_11;
    let idempotent = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    let replay = (idempotent && body.is_end_stream()).then(|| Replay::of(&parts));
    let pending = Request::from_parts(parts, Either::Left(body));
    forward(pending, replay, client_upgrade, &pool, shared).await
}

/// What is needed to send a body-less request again after it failed.
struct Replay {
    method: Method,
    uri: Uri,
    headers: hyper::HeaderMap,
}

impl Replay {
    fn of(parts: &Parts) -> Self {
        Replay { method: parts.method.clone(), uri: parts.uri.clone(), headers: parts.headers.clone() }
    }

    fn request(&self) -> Request<ReqBody> {
        let mut req = Request::new(Either::Right(Empty::new()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// A short description of why a backend failed, e.g. `connection refused`.
fn describe_io(error: &io::Error) -> String {
    if error.get_ref().is_some() {
        return error.to_string(); // a dialer's own words, e.g. "link to 10.0.0.2:7946 is down"
    }
    match error.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        io::ErrorKind::ConnectionAborted => "connection aborted".into(),
        io::ErrorKind::TimedOut => "timed out".into(),
        _ => error.to_string(),
    }
}

fn describe_connect(error: &client::ConnectError) -> String {
    match error {
        client::ConnectError::Dial(DialError::Io(e)) => describe_io(e),
        other => other.to_string(),
    }
}

fn describe_hyper(error: &hyper::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return describe_io(io);
        }
        source = e.source();
    }
    error.to_string()
}

/// A connection for one attempt: pooled kind, or upgrade kind (own task, never pooled).
enum Link {
    Pooled(Box<client::BackendConn>),
    Upgrade(SendRequest<ReqBody>),
}

impl Link {
    async fn send(
        &mut self,
        req: Request<ReqBody>,
    ) -> Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<ReqBody>>> {
        match self {
            Link::Pooled(conn) => conn.send(req).await,
            Link::Upgrade(tx) => tx.try_send_request(req).await,
        }
    }
}

async fn forward(
    request: Request<ReqBody>,
    replay: Option<Replay>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    pool: &Arc<Pool>,
    shared: &Arc<Shared>,
) -> Response<RespBody> {
    let mut pending = Some(request);
    let mut tried = Tried::default();
    let mut last_error = String::from("no attempt made");
    while let Some(i) = pool.choose(&tried, now_ms()) {
        if !tried.is_empty() {
            inc(&shared.stats.retries);
        }
        tried.insert(i);
        let backend = &pool.backends[i];
        let guard = backend.acquire();
        let mut use_pooled = client_upgrade.is_none();
        loop {
            let pooled = if use_pooled { shared.client.checkout(&backend.target) } else { None };
            let reused = pooled.is_some();
            let connected = match pooled {
                Some(conn) => Ok(Link::Pooled(conn)),
                None if client_upgrade.is_some() => {
                    client::connect_upgradable(shared, &backend.target).await.map(Link::Upgrade)
                }
                None => client::connect(shared, &backend.target).await.map(Link::Pooled),
            };
            let mut link = match connected {
                Ok(link) => link,
                Err(error) => {
                    inc(&shared.stats.failed_connects);
                    backend.mark_down(now_ms());
                    last_error = describe_connect(&error);
                    tracing::debug!(instance = %backend.instance, target = %backend.target, %error, "ingress: connect failed");
                    break;
                }
            };
            let Some(req) = pending.take().or_else(|| replay.as_ref().map(Replay::request)) else {
                break; // unreachable: a request that cannot be replayed returned below
            };
            match link.send(req).await {
                Ok(resp) => {
                    backend.mark_up();
                    return respond(resp, link, guard, client_upgrade, shared);
                }
                Err(mut error) => {
                    let unsent = error.take_message();
                    let sent = unsent.is_none();
                    pending = unsent;
                    let error = error.into_error();
                    last_error = describe_hyper(&error);
                    tracing::debug!(instance = %backend.instance, %error, sent, reused, "ingress: request to backend failed");
                    if sent && replay.is_none() {
                        backend.mark_down(now_ms());
                        return text(
                            StatusCode::BAD_GATEWAY,
                            format!(
                                "instance {} of service {:?} failed after the request was sent: {last_error}\n",
                                backend.instance, pool.service
                            ),
                        );
                    }
                    if reused {
                        // A keep-alive connection the backend had closed: try a fresh one.
                        inc(&shared.stats.retries);
                        use_pooled = false;
                        continue;
                    }
                    backend.mark_down(now_ms());
                    break;
                }
            }
        }
    }
    let n = tried.len();
    let what = if n == 1 { "the only ready instance".to_string() } else { format!("all {n} instances") };
    text(StatusCode::BAD_GATEWAY, format!("{what} of service {:?} failed: {last_error}\n", pool.service))
}

fn respond(
    mut resp: Response<Incoming>,
    link: Link,
    guard: ActiveGuard,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    shared: &Arc<Shared>,
) -> Response<RespBody> {
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return text(StatusCode::BAD_GATEWAY, "backend switched protocols unasked\n".into());
        };
        let backend_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let _guard = guard; // the connection counts as in flight until the tunnel closes
            match tokio::try_join!(client_upgrade, backend_upgrade) {
                Ok((client, backend)) => {
                    let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
                    if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
                        tracing::debug!(%error, "ingress: upgraded connection ended with an error");
                    }
                }
                Err(error) => tracing::debug!(%error, "ingress: upgrade failed"),
            }
        });
        let (mut parts, body) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers, true);
        return Response::from_parts(parts, RespBody::Detached(body));
    }
    drop(guard);
    let (mut parts, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, false);
    let body = match link {
        Link::Pooled(conn) => RespBody::backend(body, shared.client.clone(), conn),
        Link::Upgrade(_) => RespBody::Detached(body),
    };
    Response::from_parts(parts, body)
}
