//! The TCP service proxy: one listener per service address and named port
//! (`address:port`, SO_REUSEADDR), each accepted connection relayed to a ready endpoint.
//!
//! The endpoint is chosen by `balance.rs` (least connections, round-robin ties) and dialed
//! with the configured dialer (`dial.rs`: TCP for local instances, the daemon's tunnel for
//! instances on other machines). A dial that fails or times out (`connect_timeout`) marks
//! the endpoint passively down and the next untried ready endpoint is tried; no endpoint is tried twice for one connection. With no
//! ready endpoint, or when all fail, the client connection is closed at once. Bytes are then
//! copied both ways with half-close (a FIN from one side shuts down the write half of the
//! other). A connection keeps the table snapshot it started with: endpoints removed by an
//! update get no new connections, but established ones run to completion.
//!
//! Listeners follow the table: `sync` binds the addresses a new table adds (and retries ones
//! that failed before) and closes those it drops. A bind failure is logged, shown by
//! `NetHandle::bound`, and does not stop the other listeners.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

use crate::balance::{now_ms, Pool, Tried};
use crate::net::Shared;
use crate::stats::inc;

/// Binds a listening socket with SO_REUSEADDR.
pub fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

struct Slot {
    label: String,
    task: Option<JoinHandle<()>>,
    error: Option<String>,
}

/// The proxy listeners of the node.
#[derive(Default)]
pub(crate) struct Listeners {
    slots: BTreeMap<SocketAddr, Slot>,
}

impl Listeners {
    /// Makes the listeners match `want` (listen address → label).
    pub fn sync(&mut self, want: &BTreeMap<SocketAddr, String>, shared: &Arc<Shared>) {
        self.slots.retain(|addr, slot| {
            let keep = want.contains_key(addr);
            if !keep {
                if let Some(task) = slot.task.take() {
                    task.abort();
                }
                tracing::debug!(%addr, label = %slot.label, "proxy: listener closed");
            }
            keep
        });
        for (addr, label) in want {
            let slot =
                self.slots.entry(*addr).or_insert_with(|| Slot { label: label.clone(), task: None, error: None });
            slot.label.clone_from(label);
            if slot.task.as_ref().is_some_and(|t| !t.is_finished()) {
                continue;
            }
            match bind_tcp(*addr) {
                Ok(listener) => {
                    tracing::debug!(%addr, %label, "proxy: listening");
                    slot.error = None;
                    slot.task = Some(tokio::spawn(accept_loop(listener, *addr, shared.clone())));
                }
                Err(error) => {
                    tracing::warn!(%addr, %label, %error, "proxy: cannot listen; other services are unaffected");
                    slot.error = Some(error.to_string());
                    slot.task = None;
                }
            }
        }
    }

    /// `(label, address, bind error)` for every listener the table asks for.
    pub fn bound(&self) -> Vec<(String, SocketAddr, Option<String>)> {
        self.slots.iter().map(|(addr, s)| (s.label.clone(), *addr, s.error.clone())).collect()
    }

    /// Closes every listener; returns their tasks to wait for.
    pub fn close_all(&mut self) -> Vec<JoinHandle<()>> {
        let tasks: Vec<_> = self.slots.values_mut().filter_map(|s| s.task.take()).collect();
        for t in &tasks {
            t.abort();
        }
        self.slots.clear();
        tasks
    }
}

async fn accept_loop(listener: TcpListener, addr: SocketAddr, shared: Arc<Shared>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%addr, %error, "proxy: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        inc(&shared.stats.connections);
        let pool = shared.current().listen.get(&addr).map(|t| t.pool.clone());
        tokio::spawn(relay(stream, pool, shared.clone()));
    }
}

/// TCP keepalive and a user timeout on a client socket, so a client that vanished (its
/// machine died) does not hold a single-writer connection for the kernel's 2 hours.
fn keepalive(stream: &TcpStream) {
    let sock = socket2::SockRef::from(stream);
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(5))
        .with_interval(Duration::from_secs(2))
        .with_retries(3);
    let _ = sock.set_tcp_keepalive(&ka);
    let _ = sock.set_tcp_user_timeout(Some(Duration::from_secs(15)));
}

/// Copies both ways like `copy_bidirectional`, but client bytes go on only while `allowed`
/// says so (checked at every read); when it stops, the connection ends (an error).
pub(crate) async fn copy_while<C, S>(
    client: &mut C,
    server: &mut S,
    allowed: &(dyn Fn() -> bool + Sync),
) -> std::io::Result<()>
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut sr, mut sw) = tokio::io::split(server);
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = cr.read(&mut buf).await?;
            if n == 0 {
                sw.shutdown().await?;
                return Ok::<(), std::io::Error>(());
            }
            if !allowed() {
                return Err(lease_lost());
            }
            sw.write_all(&buf[..n]).await?;
        }
    };
    let down = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = sr.read(&mut buf).await?;
            if n == 0 {
                cw.shutdown().await?;
                return Ok::<(), std::io::Error>(());
            }
            cw.write_all(&buf[..n]).await?;
        }
    };
    // Half-close: a client that finished sending still gets its replies; an error on
    // either side (the lease gone) ends both at once.
    tokio::try_join!(up, down).map(|_| ())
}

/// The error a single-writer connection ends with when the node's lease is gone.
pub(crate) fn lease_lost() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        "this node holds no lease: the single-writer connection is cut",
    )
}

async fn relay(mut inbound: TcpStream, pool: Option<Arc<Pool>>, shared: Arc<Shared>) {
    let Some(pool) = pool else {
        inc(&shared.stats.connections_refused);
        return;
    };
    inc(&pool.counters.connections);
    if pool.single_writer && !shared.lease_held() {
        tracing::debug!(service = %pool.service, "proxy: this node holds no lease: single-writer connection refused");
        inc(&shared.stats.connections_refused);
        inc(&pool.counters.refused);
        return;
    }
    let mut tried = Tried::default();
    while let Some(i) = pool.choose(&tried, now_ms()) {
        if !tried.is_empty() {
            inc(&shared.stats.retries);
        }
        tried.insert(i);
        let backend = &pool.backends[i];
        let _guard = backend.acquire();
        let cut = backend.cut_signal();
        match shared.dial(&backend.target).await {
            Ok(mut outbound) => {
                backend.mark_up();
                let _ = inbound.set_nodelay(true);
                if pool.single_writer {
                    keepalive(&inbound);
                }
                // A single writer forwards client bytes only while this node holds its
                // lease, checked at every read: a node thawed after a freeze must not hand
                // a write that waited in its buffers to a primary that another replaced.
                let lease = || shared.lease_held();
                let copy = async {
                    match (pool.redis_wait, pool.single_writer) {
                        (Some(wait), _) => crate::resp::relay(&mut inbound, &mut outbound, wait, &lease).await,
                        (None, true) => copy_while(&mut inbound, &mut outbound, &lease).await,
                        (None, false) => tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await.map(|_| ()),
                    }
                };
                tokio::select! {
                    r = copy => if let Err(error) = r {
                        tracing::debug!(instance = %backend.instance, %error, "proxy: connection ended with an error");
                    },
                    _ = cut.cancelled() => {
                        tracing::debug!(instance = %backend.instance, "proxy: connection cut: the endpoint left rotation");
                    }
                }
                return;
            }
            Err(error) => {
                tracing::debug!(service = %pool.service, instance = %backend.instance, target = %backend.target, %error, "proxy: connect failed")
            }
        }
        inc(&shared.stats.failed_connects);
        inc(&pool.counters.failed_connects);
        backend.mark_down(now_ms());
    }
    if tried.is_empty() {
        tracing::debug!(service = %pool.service, "proxy: no ready endpoint, connection closed");
    } else {
        tracing::warn!(service = %pool.service, tried = tried.len(), "proxy: every ready endpoint failed, connection closed");
    }
    inc(&shared.stats.connections_refused);
    inc(&pool.counters.refused);
}
