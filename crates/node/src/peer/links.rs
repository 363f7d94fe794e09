//! Links to other nodes: one long-lived HTTP/2 connection (mutual TLS, ALPN h2) from this
//! node to each node holding instances it routes to, carrying every tunneled connection
//! as its own stream (see [`crate::tunnel`] for the far side), plus the health of those
//! nodes and of their endpoints as seen from here.
//!
//! Per peer, one task ([`run_peer`]) connects (TCP + TLS + h2 + a first `GET
//! /cluster/links` that proves the far side accepts our certificate and has sent its HTTP/2
//! settings), keeps the link, and reconnects with [`Backoff`] when it dies. Liveness comes
//! from HTTP/2 PINGs ([`LinkTiming::ping_interval`], [`LinkTiming::ping_timeout`]): a peer
//! that stops answering (crashed machine, frozen process, cut cable) loses its link within
//! about interval + timeout, and every endpoint behind it leaves this node's routing table
//! at once, before the control plane has decided anything. While the link is up, every
//! endpoint port behind it is checked every [`LinkTiming::check_interval`] by opening a
//! tunnel stream to it (the far node connects to the instance: a TCP check on that
//! machine); a failed check takes the port out of rotation here until a check passes.
//!
//! [`Reachability`] is the pure snapshot the routing table is built from; [`Links::open`]
//! opens a stream for the proxy, the ingress and the checks. A stream open fails at once
//! when the link is down and within [`LinkTiming::open_timeout`] otherwise, so the caller
//! (holdfast-net) retries another endpoint.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::tunnel::PROTOCOL;

/// Timing of links and endpoint checks, in one place (per-cluster failure-detection
/// settings can fill it later; [`Default`] is tuned for Raspberry Pis on Wi-Fi: one lost
/// packet is retransmitted by TCP within ~200-400 ms, well inside the ping timeout, so it
/// never flips a link).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkTiming {
    /// TCP connect + TLS handshake + first exchange of a new link.
    pub connect_timeout: Duration,
    /// A PING is sent when nothing was read from the link for this long...
    pub ping_interval: Duration,
    /// ...and the link is down when its answer takes longer than this.
    pub ping_timeout: Duration,
    /// How often each remote endpoint port is checked by opening a stream to it.
    pub check_interval: Duration,
    /// How long a stream open may take (including the far node's connect to the instance).
    pub open_timeout: Duration,
    /// Reconnect backoff: the first wait, doubled after each failure up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// The server side pings its clients this often (and gives up after the same time
    /// again), so the streams of a vanished peer are reaped and their instance connections
    /// closed.
    pub server_ping_interval: Duration,
}

impl Default for LinkTiming {
    fn default() -> Self {
        LinkTiming {
            connect_timeout: Duration::from_secs(1),
            ping_interval: Duration::from_millis(500),
            ping_timeout: Duration::from_secs(1),
            check_interval: Duration::from_secs(1),
            open_timeout: Duration::from_secs(1),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            server_ping_interval: Duration::from_secs(5),
        }
    }
}

/// HTTP/2 flow-control windows of a link, per stream and per connection (both ways: the
/// server side uses them too). A stream may have this much in flight unread: 1 MiB fills
/// a LAN link and ~20 MB/s at 50 ms RTT. The connection window caps what a link buffers
/// in memory (16 MiB), and is large against the stream window so a few tunneled
/// connections whose instance stopped reading cannot starve the others of window.
pub const STREAM_WINDOW: u32 = 1 << 20;
pub const CONNECTION_WINDOW: u32 = 16 << 20;
/// Streams (tunneled connections) one link may carry at once; the holdfast port's server
/// allows this many per connection.
pub const MAX_STREAMS: u32 = 8192;
/// A link no longer needed (its node holds no endpoint any more, or a new leader's first
/// answers lack that node's instances) is kept this long before it is let go, so a
/// moment's gap in the view does not cost a reconnect.
pub const LINGER: Duration = Duration::from_secs(30);

/// Reconnect delays: `min`, doubling up to `max`; [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max: max.max(min), next: min }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// What the last check of one endpoint port found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PortCheck {
    /// Not checked since the link came up (routable: the first dial or check decides).
    Unknown,
    Up,
    Failed(String),
}

/// Which remote endpoints this node can reach now: the pure input of the routing table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reachability {
    /// Peers whose link is up, with the ports whose last check failed.
    pub up: BTreeMap<String, BTreeSet<u16>>,
}

impl Reachability {
    /// Whether the link to `peer` is up.
    pub fn link_up(&self, peer: &str) -> bool {
        self.up.contains_key(peer)
    }

    /// Whether `port` behind `peer` may get new connections: link up, last check not failed.
    pub fn port_ok(&self, peer: &str, port: u16) -> bool {
        self.up.get(peer).is_some_and(|failed| !failed.contains(&port))
    }
}

/// One link as shown by `GET /cluster/links`.
#[derive(Debug, Clone, Serialize)]
pub struct LinkView {
    pub peer: String,
    pub up: bool,
    /// Milliseconds since the link came up or went down.
    pub since_ms: u64,
    /// Links established to this peer since the node started (1 while it stays up).
    pub connects: u64,
    /// Streams opened through the link (tunneled connections and checks), and open now.
    pub streams_opened: u64,
    pub streams_open: u64,
    pub last_error: Option<String>,
    pub ports: BTreeMap<u16, PortCheck>,
    /// The last round trip through the link (a `GET /healthz` each check round), while
    /// the link is up.
    pub rtt_ms: Option<f64>,
}

/// `GET /cluster/links` answer.
#[derive(Debug, Clone, Serialize)]
pub struct LinksView {
    pub links: Vec<LinkView>,
}

/// Why a link could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("connect: {0}")]
    Connect(#[source] io::Error),
    #[error("TLS: {0}")]
    Tls(#[source] io::Error),
    #[error("the peer did not agree on HTTP/2 (ALPN); is it an older holdfast?")]
    NoH2,
    #[error("HTTP/2: {0}")]
    Http(#[from] hyper::Error),
    #[error("the peer refused this node: HTTP {0}")]
    Refused(StatusCode),
    #[error("the peer runs an older holdfast without multiplexed tunnels")]
    OlderPeer,
    #[error("not a usable node address: {0}")]
    BadAddress(String),
}

type Sender = SendRequest<Empty<Bytes>>;

struct PeerState {
    link: Option<Sender>,
    since: Instant,
    last_error: Option<String>,
    ports: BTreeMap<u16, PortCheck>,
}

struct Peer {
    addr: Arc<str>,
    state: Mutex<PeerState>,
    /// Since when no endpoint needs this peer (dropped after [`LINGER`]).
    unwanted_since: Mutex<Option<Instant>>,
    cancel: CancellationToken,
    /// Wakes the peer's task to check new ports at once.
    wake: Notify,
    connects: AtomicU64,
    streams_opened: AtomicU64,
    streams_open: Arc<AtomicU64>,
    /// The last round trip of a `GET /healthz` through the link, in microseconds (0:
    /// none measured on the current link).
    rtt_us: AtomicU64,
}

impl Peer {
    fn lock(&self) -> std::sync::MutexGuard<'_, PeerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Inner {
    tls: Arc<rustls::ClientConfig>,
    timing: LinkTiming,
    peers: Mutex<HashMap<Arc<str>, Arc<Peer>>>,
    /// Bumped whenever a link or a check result changes.
    changed: watch::Sender<u64>,
    cancel: CancellationToken,
}

impl Inner {
    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// This node's links to other nodes; clones share them.
#[derive(Clone)]
pub struct Links {
    inner: Arc<Inner>,
}

impl Links {
    /// `tls`: this node's mutual-TLS client configuration (ALPN is set to h2 here).
    pub fn new(mut tls: rustls::ClientConfig, timing: LinkTiming, cancel: CancellationToken) -> Links {
        tls.alpn_protocols = vec![b"h2".to_vec()];
        Links {
            inner: Arc::new(Inner {
                tls: Arc::new(tls),
                timing,
                peers: Mutex::default(),
                changed: watch::channel(0).0,
                cancel,
            }),
        }
    }

    pub fn timing(&self) -> &LinkTiming {
        &self.inner.timing
    }

    /// Changes whenever a link goes up or down or a check result changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    /// Keeps links to the peers of `wanted` (node address → endpoint ports to check): new
    /// peers are connected, new ports are checked at once; peers no longer wanted are let
    /// go after [`LINGER`] (streams in flight finish).
    pub fn sync(&self, wanted: &BTreeMap<String, BTreeSet<u16>>) {
        let mut peers = self.inner.peers.lock().unwrap_or_else(|e| e.into_inner());
        let mut changed = false;
        let now = Instant::now();
        peers.retain(|addr, peer| {
            let mut since = peer.unwanted_since.lock().unwrap_or_else(|e| e.into_inner());
            if wanted.contains_key(&**addr) {
                *since = None;
                return true;
            }
            let since = *since.get_or_insert(now);
            let keep = now.duration_since(since) < LINGER;
            if !keep {
                peer.cancel.cancel();
                changed = true;
            }
            keep
        });
        for (addr, ports) in wanted {
            let peer = match peers.get(addr.as_str()) {
                Some(p) => p.clone(),
                None => {
                    let addr: Arc<str> = Arc::from(addr.as_str());
                    let peer = Arc::new(Peer {
                        addr: addr.clone(),
                        state: Mutex::new(PeerState {
                            link: None,
                            since: Instant::now(),
                            last_error: None,
                            ports: BTreeMap::new(),
                        }),
                        unwanted_since: Mutex::new(None),
                        cancel: self.inner.cancel.child_token(),
                        wake: Notify::new(),
                        connects: AtomicU64::new(0),
                        rtt_us: AtomicU64::new(0),
                        streams_opened: AtomicU64::new(0),
                        streams_open: Arc::new(AtomicU64::new(0)),
                    });
                    peers.insert(addr, peer.clone());
                    tokio::spawn(run_peer(self.inner.clone(), peer.clone()));
                    peer
                }
            };
            let mut st = peer.lock();
            let before = st.ports.len();
            st.ports.retain(|p, _| ports.contains(p));
            changed |= st.ports.len() != before;
            let mut new = false;
            for p in ports {
                if !st.ports.contains_key(p) {
                    st.ports.insert(*p, PortCheck::Unknown);
                    new = true;
                }
            }
            drop(st);
            if new {
                peer.wake.notify_one();
            }
        }
        drop(peers);
        if changed {
            self.inner.bump();
        }
    }

    /// The links that are up and the ports that failed their last check.
    pub fn reachability(&self) -> Reachability {
        let peers = self.inner.peers.lock().unwrap_or_else(|e| e.into_inner());
        let mut up = BTreeMap::new();
        for (addr, peer) in peers.iter() {
            let st = peer.lock();
            if st.link.is_some() {
                let failed =
                    st.ports.iter().filter(|(_, c)| matches!(c, PortCheck::Failed(_))).map(|(p, _)| *p).collect();
                up.insert(addr.to_string(), failed);
            }
        }
        Reachability { up }
    }

    /// Every link's state and counters.
    pub fn view(&self) -> LinksView {
        let peers: Vec<Arc<Peer>> =
            self.inner.peers.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        let mut links: Vec<LinkView> = peers
            .iter()
            .map(|p| {
                let st = p.lock();
                LinkView {
                    peer: p.addr.to_string(),
                    up: st.link.is_some(),
                    since_ms: u64::try_from(st.since.elapsed().as_millis()).unwrap_or(u64::MAX),
                    connects: p.connects.load(Ordering::Relaxed),
                    streams_opened: p.streams_opened.load(Ordering::Relaxed),
                    streams_open: p.streams_open.load(Ordering::Relaxed),
                    last_error: st.last_error.clone(),
                    ports: st.ports.clone(),
                    rtt_ms: match p.rtt_us.load(Ordering::Relaxed) {
                        0 => None,
                        us if st.link.is_some() => Some(us as f64 / 1000.0),
                        _ => None,
                    },
                }
            })
            .collect();
        links.sort_by(|a, b| a.peer.cmp(&b.peer));
        LinksView { links }
    }

    /// Opens a stream to `port` on `peer`: fails at once without a link, and when the far
    /// node cannot connect to the port (nothing was sent: the caller may try elsewhere).
    pub async fn open(&self, peer: &str, port: u16) -> io::Result<TunnelStream> {
        let found = self.inner.peers.lock().unwrap_or_else(|e| e.into_inner()).get(peer).cloned();
        let Some(peer) = found else {
            return Err(io::Error::new(io::ErrorKind::NotConnected, format!("no link to {peer}")));
        };
        open_on(&peer, port, self.inner.timing.open_timeout).await
    }
}

/// Opens a tunnel stream on `peer`'s link.
async fn open_on(peer: &Arc<Peer>, port: u16, timeout: Duration) -> io::Result<TunnelStream> {
    let link = peer.lock().link.clone();
    let Some(mut link) = link else {
        return Err(io::Error::new(io::ErrorKind::NotConnected, format!("link to {} is down", peer.addr)));
    };
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("https://{}/cluster/tunnel/{port}", peer.addr))
        .extension(hyper::ext::Protocol::from_static(PROTOCOL))
        .body(Empty::new())
        .map_err(io::Error::other)?;
    let opened = async {
        let resp = link.send_request(req).await.map_err(io::Error::other)?;
        if resp.status() != StatusCode::OK {
            let status = resp.status();
            let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let why = String::from_utf8_lossy(&body);
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("{} refused port {port}: HTTP {status} {}", peer.addr, why.trim()),
            ));
        }
        hyper::upgrade::on(resp).await.map_err(io::Error::other)
    };
    let upgraded = match tokio::time::timeout(timeout, opened).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer from {} for port {port} within {timeout:?}", peer.addr),
            ))
        }
    };
    peer.streams_opened.fetch_add(1, Ordering::Relaxed);
    peer.streams_open.fetch_add(1, Ordering::Relaxed);
    Ok(TunnelStream { io: TokioIo::new(upgraded), open: peer.streams_open.clone() })
}

/// One tunneled connection (an HTTP/2 stream), counted while open.
pub struct TunnelStream {
    io: TokioIo<hyper::upgrade::Upgraded>,
    open: Arc<AtomicU64>,
}

impl Drop for TunnelStream {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for TunnelStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for TunnelStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

type Driver = tokio::task::JoinHandle<Result<(), hyper::Error>>;

/// Aborts a half-made link's connection driver unless disarmed.
struct AbortGuard(Option<tokio::task::AbortHandle>);

impl AbortGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.abort();
        }
    }
}

/// TCP, TLS (ALPN h2), the HTTP/2 handshake, and a first request that must be answered
/// 200: the far side accepted our certificate, and its settings (extended CONNECT) are in.
async fn connect(inner: &Inner, addr: &str) -> Result<(Sender, Driver), LinkError> {
    let t = &inner.timing;
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(LinkError::Connect)?;
    let _ = tcp.set_nodelay(true);
    let tls = tokio_rustls::TlsConnector::from(inner.tls.clone())
        .connect(holdfast_pki::tls::server_name(), tcp)
        .await
        .map_err(LinkError::Tls)?;
    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err(LinkError::NoH2);
    }
    let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(t.ping_interval)
        .keep_alive_timeout(t.ping_timeout)
        .keep_alive_while_idle(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .handshake(TokioIo::new(tls))
        .await?;
    let driver = tokio::spawn(conn);
    let guard = AbortGuard(Some(driver.abort_handle()));
    let req = Request::get(format!("https://{addr}/cluster/links"))
        .body(Empty::new())
        .map_err(|_| LinkError::BadAddress(addr.to_string()))?;
    let resp = send.send_request(req).await?;
    match resp.status() {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND => return Err(LinkError::OlderPeer),
        other => return Err(LinkError::Refused(other)),
    }
    let _ = resp.into_body().collect().await;
    guard.disarm();
    Ok((send, driver))
}

/// Keeps the link to one peer and checks its endpoint ports, until the peer is dropped.
async fn run_peer(inner: Arc<Inner>, peer: Arc<Peer>) {
    let t = inner.timing.clone();
    let mut backoff = Backoff::new(t.backoff_min, t.backoff_max);
    let mut failures = 0u32;
    loop {
        let attempt = tokio::select! {
            _ = peer.cancel.cancelled() => return,
            r = tokio::time::timeout(t.connect_timeout, connect(&inner, &peer.addr)) => {
                r.unwrap_or(Err(LinkError::Timeout(t.connect_timeout)))
            }
        };
        match attempt {
            Ok((send, driver)) => {
                backoff.reset();
                failures = 0;
                peer.connects.fetch_add(1, Ordering::Relaxed);
                {
                    let mut st = peer.lock();
                    st.link = Some(send);
                    st.since = Instant::now();
                    st.last_error = None;
                    st.ports.values_mut().for_each(|c| *c = PortCheck::Unknown);
                }
                tracing::info!(peer = %peer.addr, "tunnel: link up");
                inner.bump();
                let ended = keep(&inner, &peer, driver).await;
                {
                    let mut st = peer.lock();
                    st.link = None;
                    st.since = Instant::now();
                    st.last_error = ended.clone();
                }
                inner.bump();
                match ended {
                    None => return, // dropped or shutting down
                    Some(why) => tracing::warn!(peer = %peer.addr, %why, "tunnel: link down"),
                }
            }
            Err(e) => {
                failures += 1;
                // The first failure is worth a line; repeats every backoff are not.
                if failures == 1 {
                    tracing::info!(peer = %peer.addr, error = %e, "tunnel: cannot link; retrying with backoff");
                } else {
                    tracing::debug!(peer = %peer.addr, error = %e, failures, "tunnel: cannot link");
                }
                peer.lock().last_error = Some(e.to_string());
            }
        }
        tokio::select! {
            _ = peer.cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// Runs while the link is up: checks ports on every tick (and at once when new ports
/// appear). Returns why the link ended, or `None` when the peer was dropped.
async fn keep(inner: &Arc<Inner>, peer: &Arc<Peer>, mut driver: Driver) -> Option<String> {
    let mut tick = tokio::time::interval(inner.timing.check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round: Option<tokio::task::JoinHandle<()>> = None;
    let why = loop {
        let check_now = tokio::select! {
            _ = peer.cancel.cancelled() => break None,
            r = &mut driver => break Some(match r {
                Ok(Ok(())) => "closed by the peer".to_string(),
                Ok(Err(e)) => holdfast_api::client::error_chain(&e),
                Err(e) => e.to_string(),
            }),
            _ = tick.tick() => true,
            _ = peer.wake.notified() => true,
        };
        if check_now && round.as_ref().is_none_or(|r| r.is_finished()) {
            round = Some(tokio::spawn(check_round(inner.clone(), peer.clone())));
        }
    };
    if let Some(r) = round {
        r.abort();
    }
    why
}

/// Times a `GET /healthz` through the link (to the response head), within `timeout`.
async fn round_trip(peer: &Peer, timeout: Duration) -> Option<Duration> {
    let mut link = peer.lock().link.clone()?;
    let req = Request::get(format!("https://{}/healthz", peer.addr)).body(Empty::new()).ok()?;
    let started = Instant::now();
    let resp = tokio::time::timeout(timeout, link.send_request(req)).await.ok()?.ok()?;
    let took = started.elapsed();
    let _ = resp.into_body().collect().await;
    Some(took)
}

/// Checks every wanted port of `peer` at once, and the link's round trip; records the
/// results.
async fn check_round(inner: Arc<Inner>, peer: Arc<Peer>) {
    let rtt = round_trip(&peer, inner.timing.open_timeout).await;
    peer.rtt_us.store(rtt.map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)), Ordering::Relaxed);
    let ports: Vec<u16> = peer.lock().ports.keys().copied().collect();
    let timeout = inner.timing.open_timeout;
    let checks = ports.into_iter().map(|port| {
        let peer = peer.clone();
        async move {
            let result = match open_on(&peer, port, timeout).await {
                Ok(stream) => {
                    drop(stream); // the far side closes its connection to the instance
                    PortCheck::Up
                }
                Err(e) => PortCheck::Failed(e.to_string()),
            };
            (port, result)
        }
    });
    let results = futures::future::join_all(checks).await;
    let mut changed = false;
    {
        let mut st = peer.lock();
        if st.link.is_none() {
            return; // the link went down meanwhile; its verdict wins
        }
        for (port, result) in results {
            let Some(slot) = st.ports.get_mut(&port) else { continue };
            let was_ok = !matches!(slot, PortCheck::Failed(_));
            let is_ok = !matches!(result, PortCheck::Failed(_));
            if was_ok != is_ok {
                changed = true;
                match &result {
                    PortCheck::Failed(why) => {
                        tracing::info!(peer = %peer.addr, port, %why, "tunnel: endpoint check failed")
                    }
                    _ => tracing::info!(peer = %peer.addr, port, "tunnel: endpoint check passes again"),
                }
            }
            *slot = result;
        }
    }
    if changed {
        inner.bump();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(700));
        let ms: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 700, 700]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
        let mut odd = Backoff::new(Duration::from_millis(50), Duration::from_millis(10));
        assert_eq!((odd.next_delay(), odd.next_delay()), (Duration::from_millis(50), Duration::from_millis(50)));
    }

    #[test]
    fn reachability_needs_the_link_and_a_passing_check() {
        let r = Reachability { up: BTreeMap::from([("n2:7946".to_string(), BTreeSet::from([20002]))]) };
        assert!(r.link_up("n2:7946"));
        assert!(r.port_ok("n2:7946", 20001), "unchecked or passing ports are routable");
        assert!(!r.port_ok("n2:7946", 20002), "a failed check takes the port out");
        assert!(!r.link_up("n3:7946"));
        assert!(!r.port_ok("n3:7946", 20001), "no link, no traffic");
    }

    #[test]
    fn default_timing_adds_up_to_the_documented_bounds() {
        // Only the arithmetic of the defaults; the detection itself is exercised by
        // `a_peer_that_stops_answering_loses_its_link_within_ping_interval_plus_timeout`.
        let t = LinkTiming::default();
        assert!(t.ping_interval + t.ping_timeout <= Duration::from_secs(2));
        assert!(t.ping_timeout >= Duration::from_millis(800), "one lost packet (TCP retransmit) must not flap");
        assert!(t.open_timeout <= Duration::from_secs(1), "a connect through a dead link fails fast");
    }

    /// A member node's HTTP/2 server (mutual TLS under `ca`) answering 200 to everything,
    /// on an ephemeral loopback port.
    async fn member_server(ca: &holdfast_pki::Ca) -> std::net::SocketAddr {
        let (cert, key) = member_cert(ca, "server");
        let tls = Arc::new(holdfast_pki::tls::server_config(&ca.cert_pem, &cert, &key).expect("server tls"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Empty::<Bytes>::new()))
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        addr
    }

    fn member_cert(ca: &holdfast_pki::Ca, name: &str) -> (String, String) {
        let key = holdfast_pki::NodeKey::generate().expect("key");
        let cert = ca
            .issue_node_cert(name, 1, &["127.0.0.1".parse().expect("ip")], &key.public_key_pem().expect("pem"))
            .expect("cert");
        (cert, key.key_pem)
    }

    /// A TCP relay to `to` that forwards both ways until `frozen` is set; from then on it
    /// holds every connection open and forwards nothing (a frozen peer: the kernel still
    /// accepts and acknowledges, the process answers nothing), also for new connections.
    async fn freezable_relay(
        to: std::net::SocketAddr,
        frozen: Arc<std::sync::atomic::AtomicBool>,
    ) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let frozen = frozen.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(to).await else { return };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up = tokio::spawn(pump(cr, sw, frozen.clone()));
                    pump(sr, cw, frozen).await;
                    let _ = up.await;
                });
            }
        });
        addr
    }

    /// Copies `r` to `w` until EOF; once `frozen`, holds both halves and forwards nothing.
    async fn pump(
        mut r: tokio::net::tcp::OwnedReadHalf,
        mut w: tokio::net::tcp::OwnedWriteHalf,
        frozen: Arc<std::sync::atomic::AtomicBool>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 16 << 10];
        loop {
            let n = match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if frozen.load(Ordering::SeqCst) {
                // No FIN, no RST, no answer: the halves stay open with this task.
                std::future::pending::<()>().await;
            }
            if w.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }

    /// Waits (on the links' change channel) until `peer`'s link is `up`; returns when.
    async fn link_becomes(links: &Links, peer: &str, up: bool, within: Duration) -> Instant {
        let mut changes = links.subscribe();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if links.reachability().link_up(peer) == up {
                return Instant::now();
            }
            if tokio::time::timeout_at(deadline, changes.changed()).await.is_err() {
                panic!(
                    "link to {peer} not {} within {within:?}; links: {:?}",
                    if up { "up" } else { "down" },
                    links.view()
                );
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_that_stops_answering_loses_its_link_within_ping_interval_plus_timeout() {
        // Proves the real detection path with the default timing: a link over TCP + TLS +
        // HTTP/2 to a peer that stops answering (its TCP stays up) goes down through
        // unanswered PINGs, no sooner than the ping timeout and no later than ping interval
        // + ping timeout (plus scheduling slack), and comes back once the peer answers.
        let ca = holdfast_pki::Ca::generate("links-test").expect("ca");
        let server = member_server(&ca).await;
        let frozen = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let peer = freezable_relay(server, frozen.clone()).await.to_string();
        let (cert, key) = member_cert(&ca, "client");
        let tls = holdfast_pki::tls::node_client_config(&ca.cert_pem, &cert, &key).expect("client tls");
        let timing = LinkTiming::default();
        let cancel = CancellationToken::new();
        let links = Links::new(tls, timing.clone(), cancel.clone());
        links.sync(&BTreeMap::from([(peer.clone(), BTreeSet::new())]));
        link_becomes(&links, &peer, true, Duration::from_secs(5)).await;
        // Quiet for a while with the peer answering: PINGs are answered, the link stays.
        tokio::time::sleep(timing.ping_interval + timing.ping_timeout).await;
        assert!(links.reachability().link_up(&peer), "an answering peer keeps its link: {:?}", links.view());

        let frozen_at = Instant::now();
        frozen.store(true, Ordering::SeqCst);
        let down_at = link_becomes(&links, &peer, false, Duration::from_secs(5)).await;
        let took = down_at - frozen_at;
        eprintln!("link down {took:?} after the peer stopped answering");
        assert!(took >= timing.ping_timeout, "down after {took:?}: sooner than an unanswered ping can time out");
        assert!(
            took <= timing.ping_interval + timing.ping_timeout + Duration::from_millis(700),
            "down after {took:?}: later than ping interval + timeout"
        );
        let view = links.view();
        assert!(view.links[0].last_error.is_some(), "the link says why it went down: {view:?}");

        frozen.store(false, Ordering::SeqCst);
        link_becomes(&links, &peer, true, Duration::from_secs(10)).await;
        assert_eq!(links.view().links[0].connects, 2, "reconnected once");
        cancel.cancel();
    }
}
