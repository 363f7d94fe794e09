//! An edge node's public listeners: HTTPS with SNI-chosen certificates (a rustls client and
//! curl), WebSocket over TLS, the HTTP→HTTPS redirect, route timeouts (504), the idle
//! timeout, the connection limit and the per-route counters.
#![allow(clippy::unwrap_used)] // test setup: a failure should panic right there

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use holdfast_net::{EdgeListen, NetConfig, Route, ServedCert};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A self-signed certificate for `names`: (cert PEM, key PEM).
fn self_signed(names: &[&str]) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

struct Edge {
    node: Node,
    http: SocketAddr,
    https: SocketAddr,
}

async fn start_edge(change: impl FnOnce(&mut NetConfig)) -> Edge {
    let node = start_node_with(|c| {
        c.edge = Some(EdgeListen {
            http: "127.0.0.1:0".parse().unwrap(),
            https: "127.0.0.1:0".parse().unwrap(),
            dns: None,
            public_https_port: 8443,
        });
        change(c);
    })
    .await;
    let find = |what: &str| node.net.bound().iter().find(|(w, _, _)| w == what).map(|(_, a, _)| *a).unwrap();
    let (http, https) = (find("edge-http"), find("edge-https"));
    Edge { node, http, https }
}

/// A TLS client trusting `cert_pem`, offering `alpn`.
fn connector(cert_pem: &str, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// Reads a response head (up to the blank line).
async fn read_head<S: AsyncReadExt + Unpin>(s: &mut S) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "response head: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap().to_ascii_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_by_sni_with_websocket_forwarded_proto_and_redirect() {
    let edge = start_edge(|_| {}).await;
    let web = Backend::start("web").await;
    let mut secure = route("demo.localhost", "/", "web");
    secure.https_redirect = true;
    edge.node.net.update(table(
        vec![service("demo", "web", service_ip(), 8080, vec![endpoint("web-0", web.addr, true)])],
        vec![secure, route("plain.localhost", "/", "web")],
    ));
    let (cert, key) = self_signed(&["demo.localhost"]);
    let (other_cert, other_key) = self_signed(&["other.localhost"]);
    edge.node.net.set_certificates(vec![
        ServedCert::from_pem(cert.as_bytes(), key.as_bytes()).unwrap(),
        ServedCert::from_pem(other_cert.as_bytes(), other_key.as_bytes()).unwrap(),
    ]);
    assert_eq!(edge.node.net.certificates().len(), 2);

    // WebSocket over TLS (HTTP/1.1 by ALPN), the upgrade passed through to the backend.
    let tcp = tokio::net::TcpStream::connect(edge.https).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("demo.localhost").unwrap();
    let mut tls = connector(&cert, &[b"http/1.1"]).connect(name, tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let key_b64 = "dGhlIHNhbXBsZSBub25jZQ==";
    let req = format!(
        "GET /chat HTTP/1.1\r\nHost: demo.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key_b64}\r\n\r\n"
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let head = read_head(&mut tls).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains(&format!("sec-websocket-accept: {}", ws_accept(key_b64).to_ascii_lowercase())), "{head}");
    for msg in [&b"hello over tls"[..], &[0u8, 255, 7]] {
        tls.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut got)).await.unwrap().unwrap();
        assert_eq!(got, msg);
    }
    drop(tls);

    // The other certificate for its name; a name nobody covers fails the handshake.
    let tcp = tokio::net::TcpStream::connect(edge.https).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("other.localhost").unwrap();
    assert!(connector(&other_cert, &[b"h2"]).connect(name, tcp).await.is_ok());
    let tcp = tokio::net::TcpStream::connect(edge.https).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("nobody.localhost").unwrap();
    assert!(connector(&cert, &[b"h2"]).connect(name, tcp).await.is_err());
    assert!(edge.node.net.stats().tls_handshake_failures >= 1);

    if have("curl") {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, &cert).unwrap();
        let resolve = format!("demo.localhost:{}:127.0.0.1", edge.https.port());
        let url = format!("https://demo.localhost:{}/headers", edge.https.port());
        let (code, out) = curl(&["--resolve", &resolve, "--cacert", ca.to_str().unwrap(), "--http2", &url]).await;
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("x-forwarded-proto: https"), "the backend is told the client used https: {out}");
        // Plain HTTP on the edge: the route asks for a redirect (GET → 301, POST → 308).
        let url = format!("http://{}/a/b?c=d", edge.http);
        let (_, out) =
            curl(&["-H", "Host: demo.localhost", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", &url]).await;
        assert_eq!(out, "301 https://demo.localhost:8443/a/b?c=d");
        let (_, out) = curl(&[
            "-X",
            "POST",
            "-d",
            "x",
            "-H",
            "Host: demo.localhost",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &url,
        ])
        .await;
        assert_eq!(out, "308");
        // A route without redirect answers on plain HTTP; the internal ingress never redirects.
        let (_, out) = curl(&["-H", "Host: plain.localhost", &format!("http://{}/", edge.http)]).await;
        assert_eq!(out.trim(), "web");
        let (_, out) = curl(&["-H", "Host: demo.localhost", &format!("http://{}/", edge.node.http)]).await;
        assert_eq!(out.trim(), "web");
    }
    edge.node.net.shutdown().await;
}

/// A backend that accepts and reads but never answers.
async fn silent_backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeout_answers_504_and_counts_per_route() {
    let node = start_node().await;
    let web = Backend::start("web").await;
    let slow = silent_backend().await;
    let mut hanging = route("slow.localhost", "/", "slow");
    hanging.timeout = Duration::from_millis(300);
    node.net.update(table(
        vec![
            service("demo", "web", service_ip(), 8080, vec![endpoint("web-0", web.addr, true)]),
            service("demo", "slow", service_ip(), 8081, vec![endpoint("slow-0", slow, true)]),
        ],
        vec![route("demo.localhost", "/", "web"), hanging],
    ));
    let mut s = tokio::net::TcpStream::connect(node.http).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: slow.localhost\r\n\r\n").await.unwrap();
    let started = std::time::Instant::now();
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut s)).await.unwrap();
    assert!(head.starts_with("http/1.1 504"), "{head}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(node.http).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: demo.localhost\r\nConnection: close\r\n\r\n").await.unwrap();
        assert!(read_head(&mut s).await.starts_with("http/1.1 200"));
    }
    let mut s = tokio::net::TcpStream::connect(node.http).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: nothing.localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    assert!(read_head(&mut s).await.starts_with("http/1.1 404"));
    let stats = node.net.route_stats();
    let by: std::collections::BTreeMap<_, _> = stats.iter().map(|r| (r.route.as_str(), r)).collect();
    let (demo, slow) = (by["demo.localhost/"], by["slow.localhost/"]);
    assert_eq!((demo.requests, demo.http_2xx, demo.http_5xx, demo.timeouts), (3, 3, 0, 0));
    assert_eq!((slow.requests, slow.http_5xx, slow.timeouts, slow.service.as_str()), (1, 1, 1, "slow"));
    assert_eq!(node.net.stats().http_timeouts, 1);
    // Counters survive a table update that keeps the route.
    node.net.update(table(
        vec![service("demo", "web", service_ip(), 8080, vec![endpoint("web-0", web.addr, true)])],
        vec![route("demo.localhost", "/", "web")],
    ));
    assert_eq!(node.net.route_stats().iter().map(|r| r.requests).collect::<Vec<_>>(), [3]);
    node.net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_close_and_the_connection_limit_holds_back_the_next() {
    let node = start_node_with(|c| {
        c.idle_timeout = Duration::from_millis(400);
        c.max_connections = 1;
    })
    .await;
    let web = Backend::start("web").await;
    node.net.update(table(
        vec![service("demo", "web", service_ip(), 8080, vec![endpoint("web-0", web.addr, true)])],
        vec![Route::new("demo.localhost", "/", "web", "http")],
    ));
    let get = b"GET / HTTP/1.1\r\nHost: demo.localhost\r\n\r\n";
    let mut first = tokio::net::TcpStream::connect(node.http).await.unwrap();
    first.write_all(get).await.unwrap();
    assert!(read_head(&mut first).await.starts_with("http/1.1 200"));
    // The limit is 1: a second client waits in the backlog while the first is open.
    let mut second = tokio::net::TcpStream::connect(node.http).await.unwrap();
    second.write_all(get).await.unwrap();
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(200), second.read(&mut byte)).await.is_err(),
        "the second connection was served while the first held the only slot"
    );
    // The first sits idle past the idle timeout: closed by the ingress, which frees the slot.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), first.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(_))), "the idle connection was not closed: {closed:?}");
    assert!(String::from_utf8_lossy(&rest).ends_with("web\n"), "{rest:?}");
    let head = tokio::time::timeout(Duration::from_secs(3), read_head(&mut second)).await.unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    node.net.shutdown().await;
}
