//! The ingress's pooled HTTP/1.1 client to backends, built on hyper's connection API.
//!
//! Why not `hyper_util::client::legacy::Client`: it consumes the request, and when the
//! connect fails the request (with its body) is gone, so it could not be retried on another
//! endpoint. Here the ingress connects itself (through the configured dialer, with its
//! timeout), keeps the request until a connection is ready, and gets it back from
//! `try_send_request` when it was never written.
//!
//! A [`BackendConn`] is driven by whoever uses it: the request future while waiting for the
//! response head, then the response body as the client reads it. No task of its own, so a
//! request costs no hop between tasks. When the body has been read the connection goes back
//! to the pool; idle connections are kept per endpoint target (at most [`MAX_IDLE`] each),
//! checked at checkout (a closed one is dropped) and dropped after [`IDLE_TIMEOUT`], shorter
//! than common server keep-alive timeouts (Node.js: 5 s), so the ingress rarely writes to a
//! connection the backend is closing. Upgrade requests (WebSocket) use a fresh connection
//! driven by its own task, as the tunnel outlives the request. gRPC requests go over
//! HTTP/2 (h2c, prior knowledge): one multiplexed connection per endpoint target, driven by
//! its own task and shared by every gRPC call to that target (gRPC needs HTTP/2: trailers,
//! streams in both directions).

use std::collections::{HashMap, HashSet};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{Either, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::client::conn::TrySendError;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::dial::{Conn, Target};
use crate::net::{DialError, Shared};

/// The body of a request sent to a backend: the client's, or empty when replayed.
pub(crate) type ReqBody = Either<Incoming, Empty<Bytes>>;

/// At most this many idle connections per endpoint.
const MAX_IDLE: usize = 256;
/// Idle connections older than this are dropped rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// Why a connection to a backend could not be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error("{0}")]
    Handshake(#[from] hyper::Error),
}

/// One HTTP/1.1 connection to a backend, driven by its user.
pub(crate) struct BackendConn {
    pub target: Target,
    tx: SendRequest<ReqBody>,
    /// `None` once the connection has ended. Dropping it matters: that cancels requests still
    /// queued for it, so their senders get them back instead of waiting forever.
    conn: Option<Connection<TokioIo<Conn>, ReqBody>>,
}

impl BackendConn {
    /// Lets the connection do its IO; drops it when it has ended.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(conn) = self.conn.as_mut() {
            if let Poll::Ready(result) = Pin::new(conn).poll(cx) {
                self.conn = None;
                if let Err(error) = result {
                    tracing::debug!(target = %self.target, %error, "backend connection ended");
                }
            }
        }
    }

    fn closed(&self) -> bool {
        self.conn.is_none()
    }

    /// Whether a new request can be sent now (not closed, previous exchange complete).
    fn usable(&mut self) -> bool {
        self.drive(&mut Context::from_waker(Waker::noop()));
        !self.closed() && self.tx.is_ready()
    }

    /// Sends `req` and drives the connection until the response head arrives. The request
    /// comes back in the error when it was not written.
    pub async fn send(&mut self, req: Request<ReqBody>) -> Result<Response<Incoming>, TrySendError<Request<ReqBody>>> {
        let mut response = std::pin::pin!(self.tx.try_send_request(req));
        poll_fn(|cx| {
            self.drive(cx);
            response.as_mut().poll(cx)
        })
        .await
    }
}

/// Opens a new pooled-kind connection to `target` (dialed within the connect timeout).
/// (Boxed: the connection with its buffers is large, and it moves between pool and bodies.)
pub(crate) async fn connect(shared: &Shared, target: &Target) -> Result<Box<BackendConn>, ConnectError> {
    let stream = shared.dial(target).await?;
    let (tx, conn) = http1::Builder::new().writev(false).handshake(TokioIo::new(stream)).await?;
    Ok(Box::new(BackendConn { target: target.clone(), tx, conn: Some(conn) }))
}

/// Opens a connection for an upgrade request, driven by its own task (never pooled).
pub(crate) async fn connect_upgradable(shared: &Shared, target: &Target) -> Result<SendRequest<ReqBody>, ConnectError> {
    let stream = shared.dial(target).await?;
    let (tx, conn) = http1::Builder::new().handshake(TokioIo::new(stream)).await?;
    let target = target.clone();
    tokio::spawn(async move {
        if let Err(error) = conn.with_upgrades().await {
            tracing::debug!(%target, %error, "backend connection ended");
        }
    });
    Ok(tx)
}

/// An idle connection and since when it is idle.
type Idle = (Box<BackendConn>, Instant);

#[derive(Default)]
pub(crate) struct ClientPool {
    idle: Mutex<HashMap<Target, Vec<Idle>>>,
    /// One HTTP/2 connection per target for gRPC.
    h2: Mutex<HashMap<Target, hyper::client::conn::http2::SendRequest<ReqBody>>>,
}

/// The HTTP/2 connection to `target` for gRPC: the shared one when it is still open and
/// `fresh` is not asked, else a new one (dialed within the connect timeout). The bool says
/// whether it was reused.
pub(crate) async fn h2_sender(
    shared: &Shared,
    target: &Target,
    fresh: bool,
) -> Result<(hyper::client::conn::http2::SendRequest<ReqBody>, bool), ConnectError> {
    if !fresh {
        let cached = shared.client.h2.lock().unwrap_or_else(|e| e.into_inner()).get(target).cloned();
        if let Some(tx) = cached.filter(|tx| !tx.is_closed()) {
            return Ok((tx, true));
        }
    }
    let stream = shared.dial(target).await?;
    let (tx, conn) = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .handshake(TokioIo::new(stream))
        .await?;
    let t = target.clone();
    tokio::spawn(async move {
        if let Err(error) = conn.await {
            tracing::debug!(target = %t, %error, "backend h2 connection ended");
        }
    });
    shared.client.h2.lock().unwrap_or_else(|e| e.into_inner()).insert(target.clone(), tx.clone());
    Ok((tx, false))
}

impl ClientPool {
    /// A pooled connection to `target` that is ready for a request, if there is one.
    pub fn checkout(&self, target: &Target) -> Option<Box<BackendConn>> {
        loop {
            // The lock is held only to pop; the check below may read from the socket.
            let (mut conn, since) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).get_mut(target)?.pop()?;
            if since.elapsed() < IDLE_TIMEOUT && conn.usable() {
                return Some(conn);
            }
        }
    }

    /// Takes back a connection whose exchange is over: pooled when ready for another
    /// request, otherwise driven by a task until it is (or closes).
    pub fn checkin(self: &Arc<Self>, mut conn: Box<BackendConn>) {
        if conn.usable() {
            self.put(conn);
            return;
        }
        if conn.closed() {
            return;
        }
        let pool = Arc::clone(self);
        tokio::spawn(async move {
            let ready = poll_fn(|cx| {
                conn.drive(cx);
                if conn.closed() {
                    Poll::Ready(false)
                } else if conn.tx.is_ready() {
                    Poll::Ready(true)
                } else {
                    Poll::Pending
                }
            })
            .await;
            if ready {
                pool.put(conn);
            }
        });
    }

    fn put(&self, conn: Box<BackendConn>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = match idle.get_mut(&conn.target) {
            Some(list) => list,
            None => idle.entry(conn.target.clone()).or_default(),
        };
        if list.len() < MAX_IDLE {
            list.push((conn, Instant::now()));
        }
    }

    /// Forgets idle connections to targets no longer in the table, and closed ones.
    pub fn retain(&self, keep: &HashSet<&Target>) {
        self.h2.lock().unwrap_or_else(|e| e.into_inner()).retain(|t, tx| keep.contains(t) && !tx.is_closed());
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|target, list| {
            list.retain_mut(|(conn, since)| since.elapsed() < IDLE_TIMEOUT && conn.usable());
            keep.contains(target) && !list.is_empty()
        });
    }

    /// Drops every idle connection (shutdown).
    pub fn clear(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.h2.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// The body of a response to a client: the backend's, or one the ingress wrote.
pub(crate) enum RespBody {
    /// From a pooled connection, driven while the body is read and given back to the pool
    /// at its end. Dropped before its end, it closes the connection.
    Backend {
        body: Incoming,
        conn: Option<(Arc<ClientPool>, Box<BackendConn>)>,
    },
    /// From an upgrade-kind connection (its own task drives it).
    Detached(Incoming),
    Local(Full<Bytes>),
}

impl RespBody {
    pub fn backend(body: Incoming, pool: Arc<ClientPool>, conn: Box<BackendConn>) -> Self {
        if body.is_end_stream() {
            pool.checkin(conn);
            RespBody::Backend { body, conn: None }
        } else {
            RespBody::Backend { body, conn: Some((pool, conn)) }
        }
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RespBody::Local(full) => Pin::new(full).poll_frame(cx).map_err(|never| match never {}),
            RespBody::Detached(body) => Pin::new(body).poll_frame(cx),
            RespBody::Backend { body, conn } => {
                let mut polled = Pin::new(&mut *body).poll_frame(cx);
                if polled.is_pending() {
                    if let Some((_, c)) = conn.as_mut() {
                        c.drive(cx);
                        polled = Pin::new(&mut *body).poll_frame(cx);
                    }
                }
                let ended = match &polled {
                    Poll::Ready(None) => true,
                    Poll::Ready(Some(Ok(_))) => body.is_end_stream(),
                    Poll::Ready(Some(Err(_))) => {
                        *conn = None;
                        false
                    }
                    Poll::Pending => false,
                };
                if ended {
                    if let Some((pool, c)) = conn.take() {
                        pool.checkin(c);
                    }
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RespBody::Local(full) => full.is_end_stream(),
            RespBody::Detached(body) | RespBody::Backend { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RespBody::Local(full) => full.size_hint(),
            RespBody::Detached(body) | RespBody::Backend { body, .. } => body.size_hint(),
        }
    }
}
