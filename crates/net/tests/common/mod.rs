//! Test helpers: small HTTP backends that answer with their name (and echo WebSocket bytes),
//! unique loopback service addresses, the node's networking, and the curl/dig runners.
#![allow(dead_code)] // each test file uses a part of the helpers
#![allow(clippy::unwrap_used)] // test setup: a failure should panic right there

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use holdfast_net::{Endpoint, Net, NetConfig, NetHandle, NetTable, Route, ServiceNet};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Whether `tool` is installed. Missing: a failure under `CI=true` (CI installs it),
/// otherwise `SKIPPED` is printed and the caller returns.
pub fn have(tool: &str) -> bool {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("`{tool}` is not installed (CI=true: the test command must install it)");
        }
        eprintln!("SKIPPED: `{tool}` is not installed");
    }
    found
}

/// A fresh service address in 127.77.0.0/16 (unique per process and call).
pub fn service_ip() -> Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7919)
        ^ SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let n = (seed.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed).wrapping_mul(2654435761))) % 65024 + 256;
    Ipv4Addr::new(127, 77, (n >> 8) as u8, (n & 0xff) as u8)
}

/// A free TCP port on `ip`.
pub fn free_port(ip: Ipv4Addr) -> u16 {
    std::net::TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

fn bind(addr: SocketAddr) -> TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    socket.listen(1024).unwrap()
}

/// A small HTTP/1.1 backend on 127.0.0.1. `GET /headers` lists the request headers; `POST`
/// answers `<name> <body length>`; an `Upgrade: websocket` request gets a 101 with the right
/// `Sec-WebSocket-Accept` and then every byte echoed; anything else gets `<name>`.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    running: Mutex<Option<Running>>,
}

struct Running {
    stop_accepting: CancellationToken,
    crash: CancellationToken,
    task: JoinHandle<()>,
}

impl Backend {
    pub async fn start(name: &str) -> Arc<Backend> {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)));
        let b = Arc::new(Backend {
            name: name.to_string(),
            addr: listener.local_addr().unwrap(),
            hits: Arc::new(AtomicUsize::new(0)),
            running: Mutex::new(None),
        });
        b.run(listener);
        b
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn run(&self, listener: TcpListener) {
        let (stop, crash) = (CancellationToken::new(), CancellationToken::new());
        let (name, hits, stop2, crash2) = (self.name.clone(), self.hits.clone(), stop.clone(), crash.clone());
        let serve = move |stream: tokio::net::TcpStream| {
            let (name, hits, crash) = (name.clone(), hits.clone(), crash2.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let (name, hits) = (name.clone(), hits.clone());
                    async move { Ok::<_, Infallible>(answer(req, &name, &hits).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades();
                tokio::select! {
                    _ = conn => {}
                    () = crash.cancelled() => {} // dropped: the socket closes mid-whatever
                }
            });
        };
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop2.cancelled() => break,
                    r = listener.accept() => if let Ok((s, _)) = r { serve(s) },
                }
            }
            // Serve what the kernel already accepted, so stopping loses no connection.
            while let Ok(Ok((s, _))) = tokio::time::timeout(Duration::ZERO, listener.accept()).await {
                serve(s);
            }
        });
        *self.running.lock().unwrap() = Some(Running { stop_accepting: stop, crash, task });
    }

    /// Stops accepting: the listener is closed (new connects are refused) after serving the
    /// connections the kernel had already accepted; open connections run to their end.
    pub async fn kill(&self) {
        let running = self.running.lock().unwrap().take();
        if let Some(r) = running {
            r.stop_accepting.cancel();
            let _ = r.task.await;
        }
    }

    /// Like a crashed process: the listener and every open connection close at once.
    pub async fn crash(&self) {
        let running = self.running.lock().unwrap().take();
        if let Some(r) = running {
            r.crash.cancel();
            r.stop_accepting.cancel();
            let _ = r.task.await;
            r.crash.cancel();
        }
    }

    /// Listens again on the same address.
    pub fn restart(&self) {
        self.run(bind(self.addr));
    }
}

async fn answer(mut req: Request<Incoming>, name: &str, hits: &AtomicUsize) -> Response<Full<Bytes>> {
    hits.fetch_add(1, Ordering::SeqCst);
    if let Some(key) = req.headers().get("sec-websocket-key").cloned() {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 4096];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-accept", ws_accept(key.to_str().unwrap()))
            .body(Full::new(Bytes::new()))
            .unwrap();
    }
    let body = if req.uri().path() == "/headers" {
        let mut lines: Vec<String> =
            req.headers().iter().map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?"))).collect();
        lines.sort();
        lines.join("\n") + "\n"
    } else if req.method() == hyper::Method::POST {
        let len = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
        format!("{name} {len}\n")
    } else {
        format!("{name}\n")
    };
    Response::new(Full::new(Bytes::from(body)))
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
pub fn ws_accept(key: &str) -> String {
    use base64::Engine;
    let digest = sha1_smol::Sha1::from(format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11")).digest().bytes();
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// A backend that reads a request and closes the connection without answering.
pub struct Dropper {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
}

impl Dropper {
    pub async fn start() -> Dropper {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (addr, count) = (listener.local_addr().unwrap(), accepted.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                });
            }
        });
        Dropper { addr, accepted }
    }
}

/// A backend like [`Backend`] that closes every connection 100 ms after accepting it (a
/// short keep-alive timeout), so the ingress's pooled connections go stale.
pub async fn short_keepalive_backend(name: &str) -> SocketAddr {
    let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)));
    let addr = listener.local_addr().unwrap();
    let (name, hits) = (name.to_string(), Arc::new(AtomicUsize::new(0)));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (name, hits) = (name.clone(), hits.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let (name, hits) = (name.clone(), hits.clone());
                    async move { Ok::<_, Infallible>(answer(req, &name, &hits).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                let _ = tokio::time::timeout(Duration::from_millis(100), conn).await;
            });
        }
    });
    addr
}

/// An address where nothing listens (connects are refused).
pub fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

pub fn endpoint(instance: &str, addr: SocketAddr, ready: bool) -> Endpoint {
    Endpoint { instance: instance.into(), ports: BTreeMap::from([("http".to_string(), addr.into())]), ready }
}

pub fn service(project: &str, name: &str, ip: Ipv4Addr, port: u16, endpoints: Vec<Endpoint>) -> ServiceNet {
    ServiceNet {
        project: project.into(),
        name: name.into(),
        address: ip,
        ports: BTreeMap::from([("http".to_string(), port)]),
        endpoints,
        single_writer: false,
        redis_wait: None,
    }
}

pub fn route(host: &str, path: &str, service: &str) -> Route {
    Route::new(host, path, service, "http")
}

pub fn table(services: Vec<ServiceNet>, routes: Vec<Route>) -> NetTable {
    NetTable { services, routes, ..NetTable::default() }
}

/// The node's networking with DNS and HTTP on free 127.0.0.1 ports.
pub struct Node {
    pub net: NetHandle,
    pub http: SocketAddr,
    pub dns: SocketAddr,
}

pub async fn start_node() -> Node {
    start_node_with(|_| {}).await
}

/// [`start_node`] with a change to the configuration first.
pub async fn start_node_with(change: impl FnOnce(&mut NetConfig)) -> Node {
    let mut config = NetConfig {
        dns_listen: Some("127.0.0.1:0".parse().unwrap()),
        http_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..NetConfig::default()
    };
    change(&mut config);
    let net = Net::start(config).await.unwrap();
    let find = |what: &str| net.bound().iter().find(|(w, _, _)| w == what).map(|(_, a, _)| *a).unwrap();
    let (http, dns) = (find("http"), find("dns"));
    Node { net, http, dns }
}

/// Runs a command; returns (exit code, stdout).
pub async fn run(cmd: &str, args: &[&str]) -> (i32, String) {
    let out = tokio::time::timeout(Duration::from_secs(60), tokio::process::Command::new(cmd).args(args).output())
        .await
        .expect("command timed out")
        .expect("command runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

pub async fn curl(args: &[&str]) -> (i32, String) {
    let mut all = vec!["-sS", "--max-time", "20"];
    all.extend_from_slice(args);
    run("curl", &all).await
}

/// Waits until `cond` holds (at most 10 s).
pub async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Counts lines of `out` equal to each value.
pub fn tally(out: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for line in out.lines().filter(|l| !l.is_empty()) {
        *m.entry(line.to_string()).or_default() += 1;
    }
    m
}
