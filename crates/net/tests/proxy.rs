//! The TCP service proxy, driven with curl through service addresses in 127.77.0.0/16.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_reaches_ready_backends_only_and_follows_updates() {
    if !have("curl") {
        return;
    }
    let node = start_node().await;
    let (a, b, c) = (Backend::start("a").await, Backend::start("b").await, Backend::start("c").await);
    let ip = service_ip();
    let port = free_port(ip);
    let eps = |b_ready: bool| {
        vec![endpoint("web-0", a.addr, true), endpoint("web-1", b.addr, b_ready), endpoint("web-2", c.addr, false)]
    };
    node.net.update(table(vec![service("demo", "web", ip, port, eps(true))], vec![]));
    let url = format!("http://{ip}:{port}/[1-20]");
    let (code, out) = curl(&["-H", "Connection: close", &url]).await;
    assert_eq!(code, 0, "{out}");
    let seen = tally(&out);
    assert_eq!(seen.get("a").copied().unwrap_or(0) + seen.get("b").copied().unwrap_or(0), 20, "{seen:?}");
    assert!(seen.contains_key("a") && seen.contains_key("b"), "both ready backends get connections: {seen:?}");
    assert_eq!(c.hits(), 0, "the unready backend gets nothing");

    // b becomes unready: no new connections for it.
    node.net.update(table(vec![service("demo", "web", ip, port, eps(false))], vec![]));
    let before = b.hits();
    let (code, out) = curl(&["-H", "Connection: close", &url]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(tally(&out).get("a"), Some(&20), "{out}");
    assert_eq!(b.hits(), before);
    assert_eq!(c.hits(), 0);
    let stats = node.net.stats();
    assert!(stats.connections >= 40, "{stats:?}");
    node.net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_killed_backend_costs_no_request_and_returns() {
    if !have("curl") {
        return;
    }
    let node = start_node().await;
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let ip = service_ip();
    let port = free_port(ip);
    let eps = vec![endpoint("web-0", a.addr, true), endpoint("web-1", b.addr, true)];
    node.net.update(table(vec![service("demo", "web", ip, port, eps)], vec![]));

    let url = format!("http://{ip}:{port}/[1-200]");
    let args = ["-H", "Connection: close", "--rate", "50/s", "-o", "/dev/null", "-w", "%{http_code}\n", url.as_str()];
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let looping = tokio::spawn(async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&args).await
    });
    wait_for("40 requests", || a.hits() + b.hits() >= 40).await;
    b.kill().await;
    let killed_at = b.hits();
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.restart();
    let (_, out) = looping.await.unwrap();
    assert_eq!(tally(&out).get("200"), Some(&200), "every request succeeds: {:?}", tally(&out));
    assert!(node.net.stats().failed_connects >= 1, "the dead backend was tried: {:?}", node.net.stats());

    // Back and ready: it gets traffic again (at the latest when its passive-down mark expires).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (code, out) = curl(&["-H", "Connection: close", &format!("http://{ip}:{port}/[1-10]")]).await;
    assert_eq!(code, 0, "{out}");
    assert!(b.hits() > killed_at, "the restarted backend gets connections again: {out}");
    node.net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_without_ready_endpoint_closes_at_once() {
    if !have("curl") {
        return;
    }
    let node = start_node().await;
    let a = Backend::start("a").await;
    let ip = service_ip();
    let port = free_port(ip);
    node.net.update(table(vec![service("demo", "web", ip, port, vec![endpoint("web-0", a.addr, false)])], vec![]));
    let started = Instant::now();
    let (code, _) = curl(&[&format!("http://{ip}:{port}/")]).await;
    assert!(code == 52 || code == 56, "curl: empty reply or reset, got exit code {code}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(node.net.stats().connections_refused, 1);
    let web: Vec<_> = node.net.proxy_stats().into_iter().filter(|p| p.service == "web").collect();
    assert_eq!(web.len(), 1, "{web:?}");
    assert_eq!(
        (web[0].project.as_str(), web[0].connections, web[0].refused, web[0].failed_connects),
        ("demo", 1, 1, 0)
    );

    // Every endpoint dead: the connection is closed after trying each once.
    let ip2 = service_ip();
    let port2 = free_port(ip2);
    let dead = vec![endpoint("x-0", dead_addr(), true), endpoint("x-1", dead_addr(), true)];
    node.net.update(table(vec![service("demo", "x", ip2, port2, dead)], vec![]));
    let (code, _) = curl(&[&format!("http://{ip2}:{port2}/")]).await;
    assert!(code == 52 || code == 56, "exit code {code}");
    let stats = node.net.stats();
    assert_eq!((stats.failed_connects, stats.retries, stats.connections_refused), (2, 1, 2), "{stats:?}");
    // Per service port: only the table's services, each with its own counts.
    let per: Vec<_> = node.net.proxy_stats();
    assert_eq!(per.len(), 1, "{per:?}");
    assert_eq!((per[0].service.as_str(), per[0].connections, per[0].refused, per[0].failed_connects), ("x", 1, 1, 2));
    node.net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_bind_errors_are_reported_and_listeners_follow_the_table() {
    if !have("curl") {
        return;
    }
    let node = start_node().await;
    let a = Backend::start("a").await;
    let (ip1, ip2) = (service_ip(), service_ip());
    let port1 = free_port(ip1);
    let taken = std::net::TcpListener::bind((ip2, 0)).unwrap();
    let port2 = taken.local_addr().unwrap().port();
    let services = vec![
        service("demo", "web", ip1, port1, vec![endpoint("web-0", a.addr, true)]),
        service("demo", "busy", ip2, port2, vec![endpoint("busy-0", a.addr, true)]),
    ];
    node.net.update(table(services.clone(), vec![]));
    let bound = node.net.bound();
    let find = |label: &str| bound.iter().find(|(l, _, _)| l == label).cloned().unwrap();
    assert_eq!(find("proxy:demo/web/http"), ("proxy:demo/web/http".into(), (ip1, port1).into(), None));
    let (_, addr, err) = find("proxy:demo/busy/http");
    assert_eq!(addr, (ip2, port2).into());
    assert!(err.unwrap().contains("in use"), "{bound:?}");
    let (code, out) = curl(&[&format!("http://{ip1}:{port1}/")]).await;
    assert_eq!((code, out.as_str()), (0, "a\n"), "the other services are served");

    // The port is freed: an update binds it. (The daemon updates on every state change
    // and every network pass; a port in the kernel's ephemeral range may be handed to
    // another socket for a moment in between, as it was once under a parallel build, so
    // a few updates are allowed.)
    drop(taken);
    let mut attempts = 0;
    loop {
        attempts += 1;
        node.net.update(table(services.clone(), vec![]));
        if node.net.bound().iter().all(|(_, _, e)| e.is_none()) || attempts == 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(node.net.bound().iter().all(|(_, _, e)| e.is_none()), "after {attempts} updates: {:?}", node.net.bound());
    let (code, out) = curl(&[&format!("http://{ip2}:{port2}/")]).await;
    assert_eq!((code, out.as_str()), (0, "a\n"));

    // A service removed from the table: its listener closes.
    node.net.update(table(services[..1].to_vec(), vec![]));
    // The listener task closes asynchronously: allow it a moment under load.
    let mut code = 0;
    for _ in 0..40 {
        code = curl(&[&format!("http://{ip2}:{port2}/")]).await.0;
        if code == 7 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(code, 7, "curl: connection refused");
    assert_eq!(node.net.bound().iter().filter(|(l, _, _)| l.starts_with("proxy:")).count(), 1);
    node.net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_existing_connections_survive_endpoint_removal() {
    let node = start_node().await;
    let a = Backend::start("a").await;
    let ip = service_ip();
    let port = free_port(ip);
    node.net.update(table(vec![service("demo", "web", ip, port, vec![endpoint("web-0", a.addr, true)])], vec![]));
    // A raw WebSocket-style tunnel through the proxy stays open across an update that
    // removes the endpoint.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect((ip, port)).await.unwrap();
    let req = "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 101"));
    node.net.update(table(vec![service("demo", "web", ip, port, vec![])], vec![]));
    s.write_all(b"still here").await.unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"still here");
    // Half-close: our FIN reaches the backend, whose echo loop ends and closes its side.
    s.shutdown().await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
    assert_eq!(n, 0);
    // New connections find no endpoint.
    let mut s2 = tokio::net::TcpStream::connect((ip, port)).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), s2.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0);
    node.net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_writer_endpoint_that_leaves_rotation_has_its_connections_cut() {
    // Proves: for a database primary's endpoint, an open client connection is cut the
    // moment the endpoint stops being ready (the client reconnects to the new primary
    // instead of writing to the old one or hanging), while a plain service keeps its
    // open connections; and the same data path refuses new connections without a lease.
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let echo_addr = echo.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let lease = Arc::new(AtomicBool::new(true));
    let held = lease.clone();
    let node = start_node_with(move |c| c.lease = Arc::new(move || held.load(Ordering::SeqCst))).await;
    let ip = service_ip();
    let port = free_port(ip);
    let svc = |ready: bool, single_writer: bool| {
        let mut s = service("demo", "db-rw", ip, port, vec![endpoint("db-m0", echo_addr, ready)]);
        s.single_writer = single_writer;
        s
    };
    async fn open(ip: std::net::Ipv4Addr, port: u16) -> tokio::net::TcpStream {
        let mut c = tokio::net::TcpStream::connect((ip, port)).await.expect("connect");
        c.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.expect("echo");
        c
    }
    // A plain service keeps an open connection when its endpoint turns unready.
    node.net.update(table(vec![svc(true, false)], vec![]));
    let mut plain = open(ip, port).await;
    node.net.update(table(vec![svc(false, false)], vec![]));
    plain.write_all(b"more").await.expect("write");
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(2), plain.read_exact(&mut buf)).await.expect("in time").expect("kept");
    drop(plain);
    // A single-writer one cuts it.
    node.net.update(table(vec![svc(true, true)], vec![]));
    let mut writer = open(ip, port).await;
    let cut_at = Instant::now();
    node.net.update(table(vec![svc(false, true)], vec![]));
    let n = tokio::time::timeout(Duration::from_secs(2), writer.read(&mut buf)).await.expect("cut in time");
    assert!(matches!(n, Ok(0) | Err(_)), "the connection was cut: {n:?}");
    assert!(cut_at.elapsed() < Duration::from_millis(500), "cut after {:?}", cut_at.elapsed());
    // Ready again: new connections work; without the lease they are refused at once.
    node.net.update(table(vec![svc(true, true)], vec![]));
    drop(open(ip, port).await);
    lease.store(false, Ordering::SeqCst);
    let mut refused = tokio::net::TcpStream::connect((ip, port)).await.expect("connect");
    let _ = refused.write_all(b"ping").await;
    let n = tokio::time::timeout(Duration::from_secs(2), refused.read(&mut buf)).await.expect("closed in time");
    assert!(matches!(n, Ok(0) | Err(_)), "no connection without the lease: {n:?}");
    node.net.shutdown().await;
}
