//! Starting, updating and stopping the node's networking: [`Net::start`] binds the DNS and
//! HTTP listeners (and an edge node's public HTTP, HTTPS and DNS), [`NetHandle::update`]
//! swaps in a new table and makes the proxy listeners match it,
//! [`NetHandle::set_certificates`] swaps the edge's certificates, [`NetHandle::shutdown`]
//! stops everything.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::access::AccessLog;
use crate::dial::{Conn, Dialer, Target, TcpDialer};
use crate::dns::{self, Handler};
use crate::error::NetError;
use crate::ingress::{self, Listener};
use crate::proxy::{bind_tcp, Listeners};
use crate::state::Compiled;
use crate::stats::{Counters, NetStats, RouteStats};
use crate::table::{NetTable, DEFAULT_DOMAIN};
use crate::tls::{CertSet, ServedCert, SniResolver};

/// What the node's networking runs.
#[derive(Clone)]
pub struct NetConfig {
    /// Run the per-service TCP proxy listeners.
    pub proxy: bool,
    /// Where the DNS server listens (UDP and TCP); `None`: no DNS server.
    pub dns_listen: Option<SocketAddr>,
    /// Where the HTTP ingress listens; `None`: no ingress.
    pub http_listen: Option<SocketAddr>,
    /// The DNS zone, default `internal`.
    pub domain: String,
    /// TTL of DNS answers in seconds, default 5.
    pub dns_ttl: u32,
    /// How long a connect to an endpoint may take before the next one is tried, default 1 s.
    pub connect_timeout: Duration,
    /// Opens streams to endpoints; default [`TcpDialer`] (local addresses only).
    pub dialer: Arc<dyn Dialer>,
    /// Whether this node holds its lease now (it can reach the control plane's quorum);
    /// single-writer services take no connection without it. Default: always held.
    pub lease: Arc<dyn Fn() -> bool + Send + Sync>,
    /// An edge node's public listeners; `None`: not an edge.
    pub edge: Option<EdgeListen>,
    /// Append one line per ingress request here (see `access.rs`); `None`: no access log.
    pub access_log: Option<PathBuf>,
    /// Connections each ingress listener serves at once, default 10,000.
    pub max_connections: usize,
    /// An ingress connection with no request in flight this long is closed, default 60 s.
    pub idle_timeout: Duration,
}

/// Where an edge node takes public traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeListen {
    /// Plain HTTP (redirects, ACME challenges, plain routes), e.g. `203.0.113.10:80`.
    pub http: SocketAddr,
    /// HTTPS with SNI and ALPN (h2, http/1.1), e.g. `203.0.113.10:443`.
    pub https: SocketAddr,
    /// The authoritative DNS server of the public zones (UDP and TCP); `None`: none.
    pub dns: Option<SocketAddr>,
    /// The HTTPS port clients use (redirects name it unless it is 443); usually `https`'s.
    pub public_https_port: u16,
}

impl std::fmt::Debug for NetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetConfig")
            .field("proxy", &self.proxy)
            .field("dns_listen", &self.dns_listen)
            .field("http_listen", &self.http_listen)
            .field("domain", &self.domain)
            .field("dns_ttl", &self.dns_ttl)
            .field("connect_timeout", &self.connect_timeout)
            .field("edge", &self.edge)
            .field("access_log", &self.access_log)
            .field("max_connections", &self.max_connections)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            proxy: true,
            dns_listen: None,
            http_listen: None,
            domain: DEFAULT_DOMAIN.to_string(),
            dns_ttl: 5,
            connect_timeout: Duration::from_secs(1),
            dialer: Arc::new(TcpDialer),
            lease: Arc::new(|| true),
            edge: None,
            access_log: None,
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// State shared by every listener and connection.
pub(crate) struct Shared {
    pub domain: String,
    pub dns_ttl: u32,
    pub connect_timeout: Duration,
    dialer: Arc<dyn Dialer>,
    lease: Arc<dyn Fn() -> bool + Send + Sync>,
    table: RwLock<Arc<Compiled>>,
    pub stats: Counters,
    pub client: Arc<crate::client::ClientPool>,
    pub certs: Arc<SniResolver>,
    pub access: Option<AccessLog>,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    /// The HTTPS port redirects name.
    pub https_port: u16,
}

impl Shared {
    /// Whether the node holds its lease (see [`NetConfig::lease`]).
    pub fn lease_held(&self) -> bool {
        (self.lease)()
    }

    /// The current table (a snapshot: later updates do not change it).
    pub fn current(&self) -> Arc<Compiled> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Connects to `target` within `connect_timeout`. An error means nothing was sent.
    pub async fn dial(&self, target: &Target) -> Result<Conn, DialError> {
        match tokio::time::timeout(self.connect_timeout, self.dialer.dial(target)).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(error)) => Err(DialError::Io(error)),
            Err(_) => Err(DialError::Timeout(self.connect_timeout)),
        }
    }
}

/// Why an endpoint could not be connected.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DialError {
    #[error("connect timeout after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Entry point of the crate.
pub struct Net;

impl Net {
    /// Binds the DNS and HTTP listeners of `config` (the error names the address that could
    /// not be bound) and starts serving an empty table; proxy listeners appear with `update`.
    pub async fn start(config: NetConfig) -> Result<NetHandle, NetError> {
        let shared = Arc::new(Shared {
            domain: config.domain.trim_matches('.').to_ascii_lowercase(),
            dns_ttl: config.dns_ttl,
            connect_timeout: config.connect_timeout,
            dialer: config.dialer.clone(),
            lease: config.lease.clone(),
            table: RwLock::new(Arc::new(Compiled::default())),
            stats: Counters::default(),
            client: Arc::default(),
            certs: Arc::default(),
            access: config.access_log.clone().map(AccessLog::start),
            max_connections: config.max_connections,
            idle_timeout: config.idle_timeout,
            https_port: config.edge.map_or(443, |e| e.public_https_port),
        });
        let cancel = CancellationToken::new();
        let mut fixed = Vec::new();
        let mut tasks = Vec::new();
        let mut dns_server = None;
        if let Some(addr) = config.dns_listen {
            let (server, bound) = dns::start(addr, shared.clone(), false)?;
            tracing::info!(addr = %bound, zone = %shared.domain, "dns: listening (udp, tcp)");
            fixed.push(("dns".to_string(), bound));
            dns_server = Some(server);
        }
        let mut public_dns = None;
        if let Some(edge) = config.edge {
            for (addr, kind, what) in
                [(edge.http, Listener::EdgeHttp, "edge-http"), (edge.https, Listener::EdgeHttps, "edge-https")]
            {
                let listener = bind_tcp(addr).map_err(|source| NetError::Bind { what, addr, source })?;
                let bound = listener.local_addr().map_err(|source| NetError::Bind { what, addr, source })?;
                tracing::info!(addr = %bound, "{what}: listening");
                fixed.push((what.to_string(), bound));
                tasks.push(tokio::spawn(ingress::serve(listener, shared.clone(), cancel.clone(), kind)));
            }
            if let Some(addr) = edge.dns {
                let (server, bound) = dns::start(addr, shared.clone(), true)?;
                tracing::info!(addr = %bound, "edge-dns: listening (udp, tcp), authoritative for the public zones");
                fixed.push(("edge-dns".to_string(), bound));
                public_dns = Some(server);
            }
        }
        if let Some(addr) = config.http_listen {
            let listener = bind_tcp(addr).map_err(|source| NetError::Bind { what: "http ingress", addr, source })?;
            let bound =
                listener.local_addr().map_err(|source| NetError::Bind { what: "http ingress", addr, source })?;
            tracing::info!(addr = %bound, "http ingress: listening");
            fixed.push(("http".to_string(), bound));
            tasks.push(tokio::spawn(ingress::serve(listener, shared.clone(), cancel.clone(), Listener::Internal)));
        }
        Ok(NetHandle {
            inner: Arc::new(Inner {
                shared,
                proxy: config.proxy,
                fixed,
                listeners: Mutex::new(Listeners::default()),
                tasks: Mutex::new(tasks),
                dns: tokio::sync::Mutex::new(dns_server.into_iter().chain(public_dns).collect()),
                cancel,
                runtime: tokio::runtime::Handle::current(),
            }),
        })
    }
}

struct Inner {
    shared: Arc<Shared>,
    proxy: bool,
    fixed: Vec<(String, SocketAddr)>,
    listeners: Mutex<Listeners>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    dns: tokio::sync::Mutex<Vec<hickory_server::Server<Handler>>>,
    cancel: CancellationToken,
    runtime: tokio::runtime::Handle,
}

/// A running node networking; clones share it.
#[derive(Clone)]
pub struct NetHandle {
    inner: Arc<Inner>,
}

impl NetHandle {
    /// Replaces the table atomically: new connections, requests and queries use it at once;
    /// proxy listeners are opened and closed to match (bind failures show in [`Self::bound`]
    /// and are retried on the next update). May be called from any thread.
    pub fn update(&self, table: NetTable) {
        let inner = &self.inner;
        let _rt = inner.runtime.enter();
        // One update at a time, so listeners always follow the newest table.
        let mut listeners = inner.listeners.lock().unwrap_or_else(|e| e.into_inner());
        if inner.cancel.is_cancelled() {
            return;
        }
        // Built outside the write lock (updates are serialized by `listeners`), so requests
        // never wait for a build.
        let compiled = Arc::new(Compiled::build(table, &inner.shared.current()));
        *inner.shared.table.write().unwrap_or_else(|e| e.into_inner()) = compiled.clone();
        let keep: HashSet<&Target> = compiled.endpoint_targets().collect();
        inner.shared.client.retain(&keep);
        if inner.proxy {
            let want: BTreeMap<SocketAddr, String> =
                compiled.listen.iter().map(|(addr, t)| (*addr, t.label.clone())).collect();
            listeners.sync(&want, &inner.shared);
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> NetStats {
        let shared = &self.inner.shared;
        let mut stats = shared.stats.snapshot();
        stats.access_log_dropped = shared.access.as_ref().map_or(0, AccessLog::dropped);
        stats
    }

    /// The counters of every route of the current table, in table order.
    pub fn route_stats(&self) -> Vec<RouteStats> {
        self.inner.shared.current().route_counters.iter().map(|c| c.snapshot()).collect()
    }

    /// The TCP proxy's counters of every service port of the current table.
    pub fn proxy_stats(&self) -> Vec<crate::ProxyStats> {
        self.inner.shared.current().proxy_counters.values().map(|c| c.snapshot()).collect()
    }

    /// Replaces the certificates the edge's HTTPS listener chooses from by SNI; new
    /// handshakes use them at once.
    pub fn set_certificates(&self, certs: Vec<ServedCert>) {
        self.inner.shared.certs.replace(CertSet::new(certs));
    }

    /// The certificates installed now.
    pub fn certificates(&self) -> Arc<CertSet> {
        self.inner.shared.certs.current()
    }

    /// What listens where: `("dns", addr, None)`, `("http", addr, None)`, an edge's
    /// `("edge-http" | "edge-https" | "edge-dns", addr, None)` and one
    /// `("proxy:<project>/<service>/<port>", addr, bind error)` per service port.
    pub fn bound(&self) -> Vec<(String, SocketAddr, Option<String>)> {
        let mut out: Vec<_> = self.inner.fixed.iter().map(|(what, addr)| (what.clone(), *addr, None)).collect();
        out.extend(self.inner.listeners.lock().unwrap_or_else(|e| e.into_inner()).bound());
        out
    }

    /// Stops accepting and closes every listener; open HTTP connections finish their
    /// in-flight requests, proxied TCP connections run until either side closes.
    pub async fn shutdown(self) {
        let inner = &self.inner;
        let proxy_tasks = {
            let mut listeners = inner.listeners.lock().unwrap_or_else(|e| e.into_inner());
            inner.cancel.cancel();
            listeners.close_all()
        };
        let tasks: Vec<_> = std::mem::take(&mut *inner.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in proxy_tasks.into_iter().chain(tasks) {
            let _ = task.await;
        }
        let servers = std::mem::take(&mut *inner.dns.lock().await);
        for mut server in servers {
            match tokio::time::timeout(Duration::from_secs(2), server.shutdown_gracefully()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%error, "dns: shutdown"),
                Err(_) => tracing::debug!("dns: shutdown timed out"),
            }
        }
        inner.shared.client.clear();
    }
}
