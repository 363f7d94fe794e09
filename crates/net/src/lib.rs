//! `holdfast-net`: the service networking of one node, with no single point of failure.
//!
//! Every node runs its own copy of everything here: a TCP proxy listening on each service's
//! stable loopback address and named ports, an internal DNS server authoritative for the
//! `internal.` zone, and an HTTP ingress (HTTP/1.1 and h2c) routing by host and path prefix.
//! An edge node also takes public traffic: HTTP and HTTPS (TLS chosen by SNI, `tls.rs`;
//! h2 by ALPN) through the same ingress, and an authoritative DNS server for the public
//! zones that answers routed hosts with the live edges' addresses (`public_dns.rs`).
//! The crate knows nothing of Raft, YAML or processes: the daemon hands it a complete
//! [`NetTable`] with [`NetHandle::update`] whenever anything changes, and every new
//! connection, request and query uses the new table at once.
//!
//! Endpoints are [`Target`]s: a local address, or a port on another machine that the
//! daemon's [`Dialer`] reaches (holdfast: through its tunnel to that node). A failed dial is
//! a connect failure like any other, so the proxy and the ingress retry another endpoint.
//!
//! Decisions are pure functions with table-driven unit tests: route matching (`route.rs`),
//! DNS answers (`dns_answer.rs`, `public_dns.rs`), certificate choice (`tls.rs`), endpoint choice (`balance.rs`) and header rewriting
//! (`headers.rs`), and the Redis relay's framing (`resp.rs`: a `WAIT` after every batch of
//! writes for `durability: replicated`). The IO around them lives in `proxy.rs`, `dns.rs`, `ingress.rs`,
//! `client.rs`, `dial.rs` and `access.rs` (the access log); `net.rs` starts and stops it all.

mod access;
mod balance;
mod client;
mod dial;
mod dns;
mod dns_answer;
mod error;
mod headers;
mod ingress;
mod net;
mod proxy;
mod public_dns;
pub mod resp;
mod route;
mod state;
mod stats;
mod table;
pub mod tls;

pub use dial::{Conn, Dialer, Io, Target, TcpDialer};
pub use error::NetError;
pub use net::{EdgeListen, Net, NetConfig, NetHandle};
pub use proxy::bind_tcp;
pub use stats::{NetStats, ProxyStats, RouteStats, LATENCY_BUCKETS_S};
pub use table::{
    service_env, service_env_with_domain, Endpoint, NetTable, PublicRecord, PublicZone, RecordData, Route, ServiceNet,
    DEFAULT_DOMAIN, DEFAULT_ROUTE_TIMEOUT,
};
pub use tls::{CertSet, ServedCert, TlsError};
