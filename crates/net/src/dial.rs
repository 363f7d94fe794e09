//! How the proxy and the ingress reach an endpoint: a [`Target`] (a local socket address,
//! or a port on another machine) and the [`Dialer`] that turns it into a byte stream.
//!
//! The default [`TcpDialer`] connects to local addresses and refuses remote targets. The
//! daemon plugs in its own dialer (`NetConfig::dialer`) that opens a stream through its
//! tunnel to the other machine. Whatever the dialer, a failed or timed-out dial is a
//! *connect* failure: nothing was sent, so the proxy and the ingress try another endpoint,
//! exactly as for a refused local connect. That is why a dialer must only return once the
//! far end is really connected (for a tunnel: the far node connected to the instance).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Where one endpoint port is reached.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// A socket address this node connects to itself (an instance on this machine).
    Addr(SocketAddr),
    /// A port on another machine, reached through the dialer. `peer` names the machine in
    /// the dialer's terms (holdfast: the node's address); the crate only compares it.
    Remote { peer: Arc<str>, port: u16 },
}

impl From<SocketAddr> for Target {
    fn from(addr: SocketAddr) -> Self {
        Target::Addr(addr)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Addr(addr) => write!(f, "{addr}"),
            Target::Remote { peer, port } => write!(f, "port {port} via {peer}"),
        }
    }
}

/// Any byte stream a dialer may return.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A connected stream to an endpoint: plain TCP (no indirection on the local path) or any
/// other stream a dialer made.
pub enum Conn {
    Tcp(TcpStream),
    Other(Box<dyn Io>),
}

impl Conn {
    /// Wraps any stream.
    pub fn other(io: impl Io) -> Conn {
        Conn::Other(Box::new(io))
    }
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conn::Tcp(s) => f.debug_tuple("Tcp").field(s).finish(),
            Conn::Other(_) => f.write_str("Other(..)"),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Other(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Other(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Other(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Tcp(s) => s.is_write_vectored(),
            Conn::Other(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_flush(cx),
            Conn::Other(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Other(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Opens streams to endpoints. Errors mean "not connected, nothing sent": the caller tries
/// another endpoint. The caller bounds each dial with `NetConfig::connect_timeout`.
#[async_trait::async_trait]
pub trait Dialer: Send + Sync + 'static {
    async fn dial(&self, target: &Target) -> io::Result<Conn>;
}

/// The default dialer: TCP to local addresses; remote targets are refused.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpDialer;

impl TcpDialer {
    /// A TCP connection with Nagle off (the proxied protocols do their own batching).
    pub async fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        Ok(Conn::Tcp(stream))
    }
}

#[async_trait::async_trait]
impl Dialer for TcpDialer {
    async fn dial(&self, target: &Target) -> io::Result<Conn> {
        match target {
            Target::Addr(addr) => TcpDialer::connect(*addr).await,
            Target::Remote { .. } => {
                Err(io::Error::new(io::ErrorKind::Unsupported, format!("no dialer for remote endpoint {target}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_display_and_order() {
        let local = Target::from(SocketAddr::from(([127, 0, 0, 1], 20001)));
        let remote = Target::Remote { peer: Arc::from("10.0.0.2:7946"), port: 20001 };
        assert_eq!(local.to_string(), "127.0.0.1:20001");
        assert_eq!(remote.to_string(), "port 20001 via 10.0.0.2:7946");
        assert!(local < remote, "local targets sort first");
        assert_ne!(remote, Target::Remote { peer: Arc::from("10.0.0.3:7946"), port: 20001 });
    }

    #[tokio::test]
    async fn the_default_dialer_refuses_remote_targets() {
        let remote = Target::Remote { peer: Arc::from("n2"), port: 1 };
        let err = TcpDialer.dial(&remote).await.err().map(|e| e.kind());
        assert_eq!(err, Some(io::ErrorKind::Unsupported));
    }
}
