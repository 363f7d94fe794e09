//! The crate's error type.

use std::net::SocketAddr;

/// Why the networking of a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A listener the configuration asks for could not be bound.
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        /// `"dns (udp)"`, `"dns (tcp)"` or `"http ingress"`.
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}
