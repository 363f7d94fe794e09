//! `holdfast-net`: the service networking of one node, with no single point of failure.
//!
//! Every node runs its own copy of everything here: a TCP proxy listening on each service's
//! stable loopback address and named ports, an internal DNS server authoritative for the
//! `internal.` zone, and an HTTP ingress (HTTP/1.1 and h2c) routing by host and path prefix.
//! The crate knows nothing of Raft, YAML or processes: the daemon hands it a complete
//! [`NetTable`] with [`NetHandle::update`] whenever anything changes, and every new
//! connection, request and query uses the new table at once.
//!
//! Endpoints are [`Target`]s: a local address, or a port on another machine that the
//! daemon's [`Dialer`] reaches (holdfast: through its tunnel to that node). A failed dial is
//! a connect failure like any other, so the proxy and the ingress retry another endpoint.
//!
//! Decisions are pure functions with table-driven unit tests: route matching (`route.rs`),
//! DNS answers (`dns_answer.rs`), endpoint choice (`balance.rs`) and header rewriting
//! (`headers.rs`), and the Redis relay's framing (`resp.rs`: a `WAIT` after every batch of
//! writes for `durability: replicated`). The IO around them lives in `proxy.rs`, `dns.rs`, `ingress.rs`,
//! `client.rs` and `dial.rs`; `net.rs` starts and stops it all.

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
pub mod resp;
mod route;
mod state;
mod stats;
mod table;

pub use dial::{Conn, Dialer, Io, Target, TcpDialer};
pub use error::NetError;
pub use net::{Net, NetConfig, NetHandle};
pub use proxy::bind_tcp;
pub use stats::NetStats;
pub use table::{service_env, service_env_with_domain, Endpoint, NetTable, Route, ServiceNet, DEFAULT_DOMAIN};
