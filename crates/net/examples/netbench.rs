//! Benchmark helper for `bench/net.sh`, and a way to try the crate by hand.
//!
//! ```text
//! netbench backend <addr>                       # tiny hyper server: 200 "ok" on every path
//! netbench node --backend <addr> --http <addr> --dns <addr> --service <ip:port> [--threads N]
//!               [--https <addr> --cert <pem> --key <pem>] [--edge-dns <addr>]
//! ```
//! `node` runs `Net` with a static table: service `web` of project `bench` on `--service`
//! (TCP proxy), one ready endpoint `--backend`, and an ingress route `bench.localhost/`.
//! `--https` adds an edge HTTPS listener serving that certificate by SNI; `--edge-dns` an
//! edge's authoritative DNS server for the zone `bench.test` (SOA, NS, MX, TXT, a routed
//! host `www.bench.test` answered with two edge addresses).
//! `--threads N` sets the runtime's worker threads (default: tokio's default, one per core).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use holdfast_net::{
    EdgeListen, Endpoint, Net, NetConfig, NetTable, PublicRecord, PublicZone, RecordData, Route, ServedCert, ServiceNet,
};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::Response;
use hyper_util::rt::TokioIo;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn need(args: &[String], name: &str) -> Result<SocketAddr, Error> {
    Ok(arg(args, name).ok_or_else(|| format!("missing {name}"))?.parse()?)
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = arg(&args, "--threads") {
        rt.worker_threads(n.parse()?);
    }
    let rt = rt.build()?;
    match args.first().map(String::as_str) {
        Some("backend") => rt.block_on(backend(args.get(1).ok_or("missing address")?.parse()?)),
        Some("node") => rt.block_on(node(&args)),
        _ => {
            Err("usage: netbench backend <addr> | netbench node --backend A --http A --dns A --service IP:PORT".into())
        }
    }
}

async fn backend(addr: SocketAddr) -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("backend listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc =
                service_fn(|_req| async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok")))) });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

async fn node(args: &[String]) -> Result<(), Error> {
    let backend = need(args, "--backend")?;
    let service = need(args, "--service")?;
    let std::net::IpAddr::V4(ip) = service.ip() else { return Err("--service must be IPv4".into()) };
    let https: Option<SocketAddr> = arg(args, "--https").map(|a| a.parse()).transpose()?;
    let edge_dns: Option<SocketAddr> = arg(args, "--edge-dns").map(|a| a.parse()).transpose()?;
    let edge = (https.is_some() || edge_dns.is_some()).then(|| EdgeListen {
        // The edge's plain-HTTP listener is not measured: any free port.
        http: SocketAddr::from(([127, 0, 0, 1], 0)),
        https: https.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
        dns: edge_dns,
        public_https_port: 443,
    });
    let config = NetConfig {
        proxy: true,
        dns_listen: Some(need(args, "--dns")?),
        http_listen: Some(need(args, "--http")?),
        edge,
        ..NetConfig::default()
    };
    let net = Net::start(config).await?;
    if https.is_some() {
        let cert = std::fs::read(arg(args, "--cert").ok_or("--https needs --cert")?)?;
        let key = std::fs::read(arg(args, "--key").ok_or("--https needs --key")?)?;
        net.set_certificates(vec![ServedCert::from_pem(&cert, &key)?]);
    }
    let rec = |name: &str, data: RecordData| PublicRecord { name: name.into(), ttl: 300, data };
    let zones = vec![PublicZone {
        name: "bench.test".into(),
        ttl: 15,
        nameservers: vec!["192.0.2.1".parse()?, "192.0.2.2".parse()?],
        routed: vec!["www.bench.test".into()],
        records: vec![
            rec("bench.test", RecordData::Mx { preference: 10, exchange: "mail.bench.test.".into() }),
            rec("bench.test", RecordData::Txt("v=spf1 -all".into())),
            rec("mail.bench.test", RecordData::A("192.0.2.25".parse()?)),
        ],
    }];
    net.update(NetTable {
        services: vec![ServiceNet {
            project: "bench".into(),
            name: "web".into(),
            address: ip,
            ports: BTreeMap::from([("http".to_string(), service.port())]),
            endpoints: vec![Endpoint {
                instance: "web-0".into(),
                ports: BTreeMap::from([("http".to_string(), backend.into())]),
                ready: true,
            }],
            single_writer: false,
            redis_wait: None,
        }],
        routes: vec![Route::new("bench.localhost", "/", "web", "http")],
        zones,
        edge_addresses: vec!["192.0.2.1".parse()?, "192.0.2.2".parse()?],
        ..NetTable::default()
    });
    for (what, addr, error) in net.bound() {
        eprintln!("{what} {addr} {}", error.unwrap_or_default());
    }
    tokio::signal::ctrl_c().await?;
    let stats = net.stats();
    net.shutdown().await;
    eprintln!("{stats:?}");
    Ok(())
}
