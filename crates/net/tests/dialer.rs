//! A pluggable dialer for endpoints on other machines: remote targets go through it, and a
//! dial that fails or hangs is a connect failure that the proxy and the ingress retry on
//! another endpoint.

mod common;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use holdfast_net::{Conn, Dialer, Endpoint, Net, NetConfig, Target, TcpDialer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Peers of a pretend cluster: `up` reaches a local backend, `refused` fails at once,
/// `frozen` never answers (like a node whose process is stopped).
struct TestDialer {
    up: SocketAddr,
    dials: AtomicUsize,
}

#[async_trait::async_trait]
impl Dialer for TestDialer {
    async fn dial(&self, target: &Target) -> io::Result<Conn> {
        self.dials.fetch_add(1, Ordering::SeqCst);
        match target {
            Target::Addr(addr) => TcpDialer::connect(*addr).await,
            Target::Remote { peer, .. } => match &**peer {
                "up" => Ok(Conn::other(tokio::net::TcpStream::connect(self.up).await?)),
                "refused" => Err(io::Error::new(io::ErrorKind::ConnectionRefused, "link to refused is down")),
                _ => std::future::pending().await,
            },
        }
    }
}

fn remote(instance: &str, peer: &str) -> Endpoint {
    let target = Target::Remote { peer: Arc::from(peer), port: 20001 };
    Endpoint { instance: instance.into(), ports: BTreeMap::from([("http".to_string(), target)]), ready: true }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_and_hanging_dials_are_retried_on_another_endpoint() {
    let backend = Backend::start("far").await;
    let dialer = Arc::new(TestDialer { up: backend.addr, dials: AtomicUsize::new(0) });
    let config = NetConfig {
        http_listen: Some("127.0.0.1:0".parse().unwrap()),
        connect_timeout: Duration::from_millis(300),
        dialer: dialer.clone(),
        ..NetConfig::default()
    };
    let net = Net::start(config).await.unwrap();
    let http = net.bound().iter().find(|(w, _, _)| w == "http").map(|(_, a, _)| *a).unwrap();
    let ip = service_ip();
    let port = free_port(ip);
    let eps = vec![remote("web-0", "refused"), remote("web-1", "frozen"), remote("web-2", "up")];
    net.update(table(vec![service("demo", "web", ip, port, eps)], vec![route("far.example", "/", "web")]));

    // TCP proxy: every connection ends at the reachable endpoint; the hanging one costs at
    // most one connect timeout, after which it is passively down.
    let mut slow = 0;
    for _ in 0..6 {
        let started = Instant::now();
        let mut s = tokio::net::TcpStream::connect((ip, port)).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.ends_with("far\n"), "{out}");
        if started.elapsed() > Duration::from_millis(250) {
            slow += 1;
        }
    }
    assert!(slow <= 1, "the frozen endpoint is passively down after one timeout ({slow} slow connections)");

    // Ingress: the same, through pooled HTTP connections made by the dialer.
    let client = http_client();
    for _ in 0..6 {
        let req = hyper::Request::get(format!("http://{http}/"))
            .header("host", "far.example")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    let stats = net.stats();
    assert!(stats.failed_connects >= 2, "{stats:?}");
    assert_eq!(stats.http_5xx, 0, "{stats:?}");
    assert!(dialer.dials.load(Ordering::SeqCst) >= 4);
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_dialer_treats_remote_endpoints_as_unreachable() {
    let net = Net::start(NetConfig::default()).await.unwrap();
    let backend = Backend::start("local").await;
    let ip = service_ip();
    let port = free_port(ip);
    let eps = vec![remote("web-0", "up"), endpoint("web-1", backend.addr, true)];
    net.update(table(vec![service("demo", "web", ip, port, eps)], vec![]));
    for _ in 0..4 {
        let mut s = tokio::net::TcpStream::connect((ip, port)).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.ends_with("local\n"), "{out}");
    }
    net.shutdown().await;
}

fn http_client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<bytes::Bytes>,
> {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new())
}
