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
//! gRPC (a request whose content-type is `application/grpc...`, which clients send over
//! HTTP/2) goes to the backend over HTTP/2 as well (`client::h2_sender`), with `te:
//! trailers`, so trailers and streams in both directions pass; other requests reach
//! backends over pooled HTTP/1.1.
//!
//! Answers the ingress makes itself are short plain text: 404 (no route for the host and
//! path), 503 (route found, no ready endpoint), 502 (every endpoint failed) and 504 (no
//! response head within the route's timeout).
//!
//! The same code serves three kinds of listener ([`Listener`]): the node's internal ingress
//! (`--http`), and an edge node's public HTTP and HTTPS listeners. HTTPS terminates TLS with
//! the certificate SNI chooses (`tls.rs`) and offers h2 and http/1.1 by ALPN; a route with
//! `https_redirect` answers plain HTTP on the edge with a permanent redirect. Each listener
//! takes at most `max_connections` connections at once (further clients wait in the
//! kernel's backlog, as HAProxy's `maxconn`), and a connection with no request in flight
//! for `idle_timeout` is closed gracefully.

use std::convert::Infallible;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{Either, Empty, Full};
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST, LOCATION, TE};
use hyper::http::request::Parts;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::access::Entry;
use crate::balance::{now_ms, ActiveGuard, Pool, Tried};
use crate::client::{self, ReqBody, RespBody};
use crate::headers;
use crate::net::{DialError, Shared};
use crate::route::{match_route, normalize_host};
use crate::stats::{inc, RouteCounters};

/// Where ACME HTTP-01 challenges are asked for.
const ACME_CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    /// The node's own ingress (`--http`): plain HTTP, never redirects.
    Internal,
    /// An edge node's public plain-HTTP port.
    EdgeHttp,
    /// An edge node's public HTTPS port.
    EdgeHttps,
}

impl Listener {
    fn scheme(self) -> &'static str {
        match self {
            Listener::EdgeHttps => "https",
            Listener::Internal | Listener::EdgeHttp => "http",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Listener::Internal => "http ingress",
            Listener::EdgeHttp => "edge http",
            Listener::EdgeHttps => "edge https",
        }
    }
}

/// One client connection, as its requests see it.
struct ConnInfo {
    /// The client's address as it goes into X-Forwarded-For.
    client: HeaderValue,
    kind: Listener,
    /// Requests being handled, and when the last one finished (ms since `opened`).
    in_flight: AtomicUsize,
    last_done_ms: AtomicU64,
    opened: Instant,
}

/// Accepts and serves connections until `cancel`; open connections then finish their
/// in-flight requests and close (graceful shutdown).
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, cancel: CancellationToken, kind: Listener) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // writev(false): hyper flattens head and body into one buffer written with send(2),
    // cheaper than writev(2) for the small messages that dominate.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(30)).writev(false);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let tls = match kind {
        Listener::EdgeHttps => match crate::tls::server_config(shared.certs.clone()) {
            Ok(cfg) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg))),
            Err(error) => {
                tracing::error!(%error, "edge https: cannot build the TLS configuration; not serving");
                return;
            }
        },
        _ => None,
    };
    let limit = Arc::new(Semaphore::new(shared.max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            () = cancel.cancelled() => return,
            permit = limit.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::warn!(%error, "{}: accept failed", kind.what());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (shared, builder, cancel, tls) = (shared.clone(), builder.clone(), cancel.clone(), tls.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let client = match HeaderValue::from_str(&peer.ip().to_string()) {
                Ok(v) => v,
                Err(_) => HeaderValue::from_static("unknown"),
            };
            let info = Arc::new(ConnInfo {
                client,
                kind,
                in_flight: AtomicUsize::new(0),
                last_done_ms: AtomicU64::new(0),
                opened: Instant::now(),
            });
            let result = match tls {
                Some(acceptor) => match handshake(&acceptor, stream).await {
                    Ok(tls) => serve_conn(TokioIo::new(tls), info, shared, &builder, cancel).await,
                    Err(error) => {
                        inc(&shared.stats.tls_handshake_failures);
                        tracing::debug!(%peer, %error, "edge https: handshake failed");
                        Ok(())
                    }
                },
                None => serve_conn(TokioIo::new(stream), info, shared, &builder, cancel).await,
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "{}: connection ended with an error", kind.what());
            }
        });
    }
}

async fn handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: TcpStream,
) -> io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")),
    }
}

/// Serves one connection's requests until it ends, `cancel`, or it sat idle too long.
async fn serve_conn<I>(
    io: I,
    info: Arc<ConnInfo>,
    shared: Arc<Shared>,
    builder: &auto::Builder<TokioExecutor>,
    cancel: CancellationToken,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let idle = shared.idle_timeout;
    let svc = {
        let info = info.clone();
        service_fn(move |req| {
            let (shared, info) = (shared.clone(), info.clone());
            async move {
                info.in_flight.fetch_add(1, Ordering::Relaxed);
                let resp = handle(req, &info, &shared).await;
                info.last_done_ms.store(info.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
                info.in_flight.fetch_sub(1, Ordering::Relaxed);
                Ok::<_, Infallible>(resp)
            }
        })
    };
    let conn = builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    let mut wake = tokio::time::Instant::now() + idle;
    loop {
        tokio::select! {
            result = conn.as_mut() => return result,
            () = cancel.cancelled() => break,
            () = tokio::time::sleep_until(wake) => {
                let last = Duration::from_millis(info.last_done_ms.load(Ordering::Relaxed));
                let idle_since = info.opened + last;
                if info.in_flight.load(Ordering::Relaxed) == 0 && idle_since.elapsed() >= idle {
                    break;
                }
                wake = tokio::time::Instant::from_std(idle_since.max(Instant::now() - idle) + idle);
                if wake <= tokio::time::Instant::now() {
                    wake = tokio::time::Instant::now() + idle;
                }
            }
        }
    }
    conn.as_mut().graceful_shutdown();
    conn.await
}

async fn handle(req: Request<Incoming>, info: &ConnInfo, shared: &Arc<Shared>) -> Response<RespBody> {
    let started = Instant::now();
    let logged = shared.access.as_ref().map(|_| {
        let version = match req.version() {
            Version::HTTP_2 => "h2",
            Version::HTTP_10 => "http/1.0",
            _ => "http/1.1",
        };
        (req.method().to_string(), req.uri().path().to_string(), version)
    });
    let outcome = route_and_forward(req, info, shared).await;
    let status = outcome.resp.status().as_u16();
    shared.stats.http_status(status);
    let elapsed = started.elapsed();
    if let Some(counters) = &outcome.route {
        counters.record(status, elapsed.as_micros() as u64);
    }
    if let (Some(log), Some((method, path, version))) = (&shared.access, logged) {
        log.log(&Entry {
            client: info.client.to_str().unwrap_or("-"),
            scheme: info.kind.scheme(),
            version,
            host: outcome.host.as_deref().unwrap_or(""),
            method: &method,
            path: &path,
            status,
            elapsed,
            route: outcome.route.as_ref().map(|c| c.label.as_str()),
            service: outcome.route.as_ref().map(|c| c.service.as_str()),
            instance: outcome.instance.as_deref(),
        });
    }
    outcome.resp
}

/// A request's answer and what the log and counters say about it.
struct Outcome {
    resp: Response<RespBody>,
    /// The request's host (only when the access log is on).
    host: Option<String>,
    route: Option<Arc<RouteCounters>>,
    /// The instance that answered (only when the access log is on).
    instance: Option<String>,
}

fn text(status: StatusCode, body: String) -> Response<RespBody> {
    let mut resp = Response::new(RespBody::Local(Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

/// The permanent redirect of `host` + `uri` to HTTPS on port `https_port`: 301 for GET and
/// HEAD, 308 (method and body kept) otherwise.
fn redirect(method: &Method, host: &str, uri: &Uri, https_port: u16) -> Response<RespBody> {
    let port = if https_port == 443 { String::new() } else { format!(":{https_port}") };
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let location = format!("https://{host}{port}{path}");
    let status = if matches!(*method, Method::GET | Method::HEAD) {
        StatusCode::MOVED_PERMANENTLY
    } else {
        StatusCode::PERMANENT_REDIRECT
    };
    let mut resp = text(status, format!("moved to {location}\n"));
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp
}

async fn route_and_forward(mut req: Request<Incoming>, info: &ConnInfo, shared: &Arc<Shared>) -> Outcome {
    let compiled = shared.current();
    // HTTP/2 (and HTTP/1.1 absolute-form) carry the host in the URI authority.
    let host_value = match req.uri().authority() {
        Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
        None => req.headers().get(HOST).cloned(),
    };
    let host = normalize_host(host_value.as_ref().and_then(|v| v.to_str().ok()).unwrap_or(""));
    // The host as the access log shows it: copied only when there is a log.
    let log_host = || shared.access.is_some().then(|| host.to_string());
    let path = req.uri().path();
    // ACME HTTP-01: a challenge the cluster is answering, on plain HTTP, before any route
    // or redirect (an unknown token falls through to the routes: an app may do its own).
    if info.kind != Listener::EdgeHttps {
        let token = path.strip_prefix(ACME_CHALLENGE_PATH);
        if let Some(key_auth) = token.and_then(|t| compiled.table.acme_challenges.get(t)) {
            let resp = text(StatusCode::OK, key_auth.clone());
            return Outcome { resp, host: log_host(), route: None, instance: None };
        }
    }
    let Some(ri) = match_route(&compiled.table.routes, &host, path) else {
        let resp = text(StatusCode::NOT_FOUND, format!("no route for host {host:?} path {path:?}\n"));
        return Outcome { resp, host: log_host(), route: None, instance: None };
    };
    let route = &compiled.table.routes[ri];
    let counters = compiled.route_counters.get(ri).cloned();
    let done = |resp| Outcome { resp, host: log_host(), route: counters.clone(), instance: None };
    if info.kind == Listener::EdgeHttp && route.https_redirect {
        return done(redirect(req.method(), &host, req.uri(), shared.https_port));
    }
    let pool = match &compiled.route_pools[ri] {
        Some(pool) if !pool.backends.is_empty() => pool.clone(),
        Some(_) => {
            return done(text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no ready instance of service {:?} (route {})\n", route.service, route.label()),
            ));
        }
        None => {
            let why = match compiled.table.find_service(&route.service) {
                Some(_) => format!("service {:?} has no port {:?}", route.service, route.port),
                None => format!("unknown service {:?}", route.service),
            };
            return done(text(StatusCode::SERVICE_UNAVAILABLE, format!("{why} (route {})\n", route.label())));
        }
    };
    let timeout = route.timeout;
    drop(compiled);

    let upgrade = headers::is_upgrade(req.headers());
    let grpc = !upgrade && is_grpc(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    headers::forward_request(&mut parts.headers, &info.client, host_value.as_ref(), upgrade, info.kind.scheme());
    if grpc {
        // HTTP/2 to the backend: the authority in the URI, `te: trailers` (gRPC needs it).
        let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let authority = host_value.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("localhost");
        parts.uri = format!("http://{authority}{path}").parse().unwrap_or_else(|_| Uri::from_static("/"));
        parts.headers.remove(HOST);
        parts.headers.insert(TE, HeaderValue::from_static("trailers"));
        parts.version = Version::HTTP_2;
    } else {
        if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
            parts.uri = parts.uri.path_and_query().cloned().map_or_else(|| Uri::from_static("/"), Uri::from);
        }
        parts.version = Version::HTTP_11;
    }
    let idempotent = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    let replay = (idempotent && body.is_end_stream()).then(|| Replay::of(&parts));
    let pending = Request::from_parts(parts, Either::Left(body));
    let want_instance = shared.access.is_some();
    let how = Forward { grpc, counters: counters.as_deref(), want_instance };
    let sent = forward(pending, replay, client_upgrade, &pool, shared, how);
    match tokio::time::timeout(timeout, sent).await {
        Ok((resp, instance)) => Outcome { resp, host: log_host(), route: counters, instance },
        Err(_) => {
            inc(&shared.stats.http_timeouts);
            if let Some(c) = &counters {
                inc(&c.timeouts);
            }
            let resp = text(
                StatusCode::GATEWAY_TIMEOUT,
                format!("service {:?} did not answer within {timeout:?}\n", pool.service),
            );
            Outcome { resp, host: log_host(), route: counters, instance: None }
        }
    }
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

/// Whether a request is gRPC (any `application/grpc` content type: `+proto`, `+json`...).
fn is_grpc(headers: &hyper::HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// How one request is forwarded.
struct Forward<'a> {
    /// Over HTTP/2 to the backend.
    grpc: bool,
    counters: Option<&'a RouteCounters>,
    /// Return the name of the instance that answered (for the access log).
    want_instance: bool,
}

/// A connection for one attempt: pooled kind, upgrade kind (own task, never pooled), or a
/// shared HTTP/2 connection (gRPC).
enum Link {
    Pooled(Box<client::BackendConn>),
    Upgrade(SendRequest<ReqBody>),
    H2(hyper::client::conn::http2::SendRequest<ReqBody>),
}

impl Link {
    async fn send(
        &mut self,
        req: Request<ReqBody>,
    ) -> Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<ReqBody>>> {
        match self {
            Link::Pooled(conn) => conn.send(req).await,
            Link::Upgrade(tx) => tx.try_send_request(req).await,
            Link::H2(tx) => tx.try_send_request(req).await,
        }
    }
}

/// Sends the request to a backend of `pool`, retrying as the module doc says; the response,
/// and the instance that gave it when `want_instance`.
async fn forward(
    request: Request<ReqBody>,
    replay: Option<Replay>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    pool: &Arc<Pool>,
    shared: &Arc<Shared>,
    how: Forward<'_>,
) -> (Response<RespBody>, Option<String>) {
    let Forward { grpc, counters, want_instance } = how;
    let mut pending = Some(request);
    let mut tried = Tried::default();
    let mut last_error = String::from("no attempt made");
    while let Some(i) = pool.choose(&tried, now_ms()) {
        if !tried.is_empty() {
            inc(&shared.stats.retries);
            if let Some(c) = counters {
                inc(&c.retries);
            }
        }
        tried.insert(i);
        let backend = &pool.backends[i];
        let guard = backend.acquire();
        let mut use_pooled = client_upgrade.is_none();
        loop {
            let pooled = if use_pooled && !grpc { shared.client.checkout(&backend.target) } else { None };
            let mut reused = pooled.is_some();
            let connected = match pooled {
                Some(conn) => Ok(Link::Pooled(conn)),
                None if grpc => client::h2_sender(shared, &backend.target, !use_pooled).await.map(|(tx, was)| {
                    reused = was;
                    Link::H2(tx)
                }),
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
                    let instance = want_instance.then(|| backend.instance.clone());
                    return (respond(resp, link, guard, client_upgrade, shared), instance);
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
                        let resp = text(
                            StatusCode::BAD_GATEWAY,
                            format!(
                                "instance {} of service {:?} failed after the request was sent: {last_error}\n",
                                backend.instance, pool.service
                            ),
                        );
                        return (resp, want_instance.then(|| backend.instance.clone()));
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
    (text(StatusCode::BAD_GATEWAY, format!("{what} of service {:?} failed: {last_error}\n", pool.service)), None)
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
        Link::Upgrade(_) | Link::H2(_) => RespBody::Detached(body),
    };
    Response::from_parts(parts, body)
}
