//! The HTTP ingress, driven with curl (HTTP/1.1 and h2c) and a raw WebSocket handshake.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn host(h: &str) -> String {
    format!("Host: {h}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_routes_by_host_and_path_and_sets_forwarded_headers() {
    if !have("curl") {
        return;
    }
    let node = start_node().await;
    let (web, api) = (Backend::start("web").await, Backend::start("api").await);
    let services = vec![
        service("demo", "web", service_ip(), 8080, vec![endpoint("web-0", web.addr, true)]),
        service("demo", "api", service_ip(), 8080, vec![endpoint("api-0", api.addr, true)]),
    ];
    let routes = vec![
        route("demo.localhost", "/", "web"),
        route("demo.localhost", "/api", "demo/api"),
        route("*.wild.localhost", "/", "api"),
    ];
    node.net.update(table(services, routes));
    let base = format!("http://{}", node.http);
    let get = |path: &str, h: &str| {
        let (url, h) = (format!("{base}{path}"), host(h));
        async move { curl(&["-H", &h, &url]).await }
    };
    assert_eq!(get("/", "demo.localhost").await, (0, "web\n".into()));
    assert_eq!(get("/index.html", "Demo.Localhost:80").await, (0, "web\n".into()));
    assert_eq!(get("/api", "demo.localhost").await, (0, "api\n".into()));
    assert_eq!(get("/api/users?x=1", "demo.localhost").await, (0, "api\n".into()));
    assert_eq!(get("/apix", "demo.localhost").await, (0, "web\n".into()));
    assert_eq!(get("/", "a.b.wild.localhost").await, (0, "api\n".into()));

    let (code, out) = curl(&[
        "-H",
        "Host: demo.localhost",
        "-H",
        "X-Forwarded-For: 203.0.113.9",
        "-H",
        "X-Forwarded-Proto: https",
        "-H",
        "Connection: keep-alive, X-Private",
        "-H",
        "X-Private: secret",
        &format!("{base}/headers"),
    ])
    .await;
    assert_eq!(code, 0);
    assert!(out.contains("x-forwarded-for: 203.0.113.9, 127.0.0.1\n"), "{out}");
    assert!(out.contains("x-forwarded-proto: http\n"), "{out}");
    assert!(out.contains("x-forwarded-host: demo.localhost\n"), "{out}");
    assert!(out.contains("host: demo.localhost\n"), "{out}");
    assert!(!out.contains("x-private"), "hop-by-hop headers named in Connection are removed: {out}");

    // HTTP/2 with prior knowledge; the backend gets HTTP/1.1 with a Host header.
    let (code, out) = curl(&[
        "--http2-prior-knowledge",
        "-w",
        "%{http_version}",
        &format!("http://demo.localhost:{}/headers", node.http.port()),
        "--connect-to",
        &format!("demo.localhost:{}:{}", node.http.port(), node.http),
    ])
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with('2'), "served over HTTP/2: {out}");
    assert!(out.contains(&format!("host: demo.localhost:{}\n", node.http.port())), "{out}");
    let (code, out) = curl(&["--http2-prior-knowledge", "-H", "Host: demo.localhost", &format!("{base}/api/x")]).await;
    assert_eq!((code, out.as_str()), (0, "api\n"));
    let (code, out) =
        curl(&["--http2-prior-knowledge", "-H", "Host: demo.localhost", "-d", "12345", &format!("{base}/")]).await;
    assert_eq!((code, out.as_str()), (0, "web 5\n"), "h2 request body reaches the backend");

    let stats = node.net.stats();
    assert!(stats.http_2xx >= 10, "{stats:?}");
    node.net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_own_answers_404_503_502() {
    if !have("curl") {
        return;
    }
    let node = start_node().await;
    let web = Backend::start("web").await;
    let services = vec![
        service("demo", "web", service_ip(), 8080, vec![endpoint("web-0", web.addr, false)]),
        service(
            "demo",
            "dead",
            service_ip(),
            8080,
            (0..3).map(|i| endpoint(&format!("dead-{i}"), dead_addr(), true)).collect(),
        ),
    ];
    let routes = vec![
        route("demo.localhost", "/", "web"),
        route("dead.localhost", "/", "dead"),
        route("typo.localhost", "/", "wbe"),
    ];
    node.net.update(table(services, routes));
    let base = format!("http://{}", node.http);
    let fetch = |h: &str, path: &str| {
        let (url, h) = (format!("{base}{path}"), host(h));
        async move { curl(&["-H", &h, "-w", "\n%{http_code}", &url]).await.1 }
    };
    assert_eq!(fetch("x.example", "/p").await, "no route for host \"x.example\" path \"/p\"\n\n404");
    assert_eq!(
        fetch("demo.localhost", "/").await,
        "no ready instance of service \"web\" (route demo.localhost/)\n\n503"
    );
    assert_eq!(
        fetch("dead.localhost", "/").await,
        "all 3 instances of service \"dead\" failed: connection refused\n\n502"
    );
    assert_eq!(fetch("typo.localhost", "/").await, "unknown service \"wbe\" (route typo.localhost/)\n\n503");
    let stats = node.net.stats();
    assert_eq!((stats.http_4xx, stats.http_5xx, stats.failed_connects), (1, 3, 3), "{stats:?}");
    node.net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_keep_alive_reuses_one_connection() {
    if !have("curl") {
        return;
    }
    let node = start_node().await;
    let web = Backend::start("web").await;
    node.net.update(table(
        vec![service("demo", "web", service_ip(), 8080, vec![endpoint("web-0", web.addr, true)])],
        vec![route("demo.localhost", "/", "web")],
    ));
    let (a, b) = (format!("http://{}/one", node.http), format!("http://{}/two", node.http));
    let (code, out) =
        curl(&["-H", "Host: demo.localhost", "-o", "/dev/null", "-o", "/dev/null", "-w", "%{num_connects}\n", &a, &b])
            .await;
    assert_eq!((code, out.as_str()), (0, "1\n0\n"), "the second request reuses the first connection");
    node.net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_websocket_upgrade() {
    let node = start_node().await;
    let web = Backend::start("web").await;
    node.net.update(table(
        vec![service("demo", "web", service_ip(), 8080, vec![endpoint("web-0", web.addr, true)])],
        vec![route("demo.localhost", "/", "web")],
    ));
    let mut s = tokio::net::TcpStream::connect(node.http).await.unwrap();
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let req = format!(
        "GET /chat HTTP/1.1\r\nHost: demo.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "response head: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert_eq!(ws_accept(key), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert!(head.contains(&format!("sec-websocket-accept: {}", ws_accept(key).to_ascii_lowercase())), "{head}");
    for msg in [&b"hello"[..], b"through the ingress", &[0u8, 255, 1, 2]] {
        s.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got)).await.unwrap().unwrap();
        assert_eq!(got, msg);
    }
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert!(rest.is_empty());
    assert_eq!(node.net.stats().http_1xx, 1);
    node.net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_killed_backend_costs_no_request_and_returns() {
    if !have("curl") {
        return;
    }
    let node = start_node().await;
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    node.net.update(table(
        vec![service(
            "demo",
            "web",
            service_ip(),
            8080,
            vec![endpoint("web-0", a.addr, true), endpoint("web-1", b.addr, true)],
        )],
        vec![route("demo.localhost", "/", "web")],
    ));
    let url = format!("http://{}/[1-200]", node.http);
    let looping = tokio::spawn(async move {
        curl(&["-H", "Host: demo.localhost", "--rate", "50/s", "-o", "/dev/null", "-w", "%{http_code}\n", &url]).await
    });
    wait_for("40 requests", || a.hits() + b.hits() >= 40).await;
    b.crash().await;
    let killed_at = b.hits();
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.restart();
    let (_, out) = looping.await.unwrap();
    assert_eq!(tally(&out).get("200"), Some(&200), "every request succeeds: {:?}", tally(&out));

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (code, out) = curl(&["-H", "Host: demo.localhost", &format!("http://{}/[1-10]", node.http)]).await;
    assert_eq!(code, 0, "{out}");
    assert!(b.hits() > killed_at, "the restarted backend gets requests again: {out}");
    node.net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_retries_unsent_requests_and_idempotent_ones_only() {
    if !have("curl") {
        return;
    }
    let node = start_node().await;
    let good = Backend::start("good").await;
    let dropper = Dropper::start().await;
    let services = vec![
        // Connect refused: nothing was sent, so even a POST with a body moves on.
        service(
            "demo",
            "refused",
            service_ip(),
            8080,
            vec![endpoint("r-0", dead_addr(), true), endpoint("r-1", good.addr, true)],
        ),
        // The request reaches the instance, which closes without answering.
        service(
            "demo",
            "flaky",
            service_ip(),
            8080,
            vec![endpoint("f-0", dropper.addr, true), endpoint("f-1", good.addr, true)],
        ),
        service("demo", "broken", service_ip(), 8080, vec![endpoint("b-0", dropper.addr, true)]),
    ];
    let routes = vec![
        route("refused.localhost", "/", "refused"),
        route("flaky.localhost", "/", "flaky"),
        route("broken.localhost", "/", "broken"),
    ];
    node.net.update(table(services, routes));
    let url = |h: &str| format!("http://{h}:{}/", node.http.port());
    let to = format!("::{}", node.http);

    for _ in 0..4 {
        let (code, out) = curl(&["--connect-to", &to, "-d", "hello", &url("refused.localhost")]).await;
        assert_eq!((code, out.as_str()), (0, "good 5\n"), "POST is retried after a refused connect");
    }
    for _ in 0..4 {
        let (code, out) = curl(&["--connect-to", &to, &url("flaky.localhost")]).await;
        assert_eq!((code, out.as_str()), (0, "good\n"), "GET is retried after the instance failed");
    }
    assert!(dropper.accepted.load(std::sync::atomic::Ordering::SeqCst) >= 1, "the failing instance was tried");

    let (_, out) = curl(&["--connect-to", &to, "-w", "\n%{http_code}", &url("broken.localhost")]).await;
    assert!(out.starts_with("the only ready instance of service \"broken\" failed: "), "{out}");
    assert!(out.ends_with("502"), "{out}");
    let (_, out) = curl(&["--connect-to", &to, "-d", "x", "-w", "\n%{http_code}", &url("broken.localhost")]).await;
    assert!(out.starts_with("instance b-0 of service \"broken\" failed after the request was sent: "), "{out}");
    assert!(out.ends_with("502"), "{out}");
    node.net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_never_sends_on_a_stale_pooled_connection() {
    if !have("curl") {
        return;
    }
    let node = start_node().await;
    let addr = short_keepalive_backend("short").await;
    node.net.update(table(
        vec![service("demo", "short", service_ip(), 8080, vec![endpoint("short-0", addr, true)])],
        vec![route("demo.localhost", "/", "short")],
    ));
    for _ in 0..5 {
        let (code, out) = curl(&["-H", "Host: demo.localhost", "-d", "12345", &format!("http://{}/", node.http)]).await;
        assert_eq!((code, out.as_str()), (0, "short 5\n"), "a POST never fails on a connection the backend closed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stats = node.net.stats();
    assert_eq!((stats.retries, stats.http_5xx), (0, 0), "closed idle connections are noticed at checkout: {stats:?}");
    node.net.shutdown().await;
}
