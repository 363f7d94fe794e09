//! What the end-to-end tests of the CLI share: holdfast-testbed's cluster harness and
//! `wait_for`, given this build's `holdfast` binary. Every node is a real `holdfast`
//! process; the harness stops them and fails the test on an unexpected ERROR log line.
#![allow(dead_code)] // each test binary uses a different part

pub mod pg;

use std::path::PathBuf;

#[allow(unused_imports)] // each test binary uses a different part
pub use holdfast_testbed::cluster::{alive, libc_sig, pids_in_group, service_of, signal, stop_and_wait};
#[allow(unused_imports)]
pub use holdfast_testbed::{namespaces_or_skip, seen_unless, wait_for, wait_for_every, Cluster, ClusterConfig, Node};

/// The `holdfast` binary under test.
pub fn holdfast_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_holdfast"))
}

/// A cluster configuration for the binary under test, on loopback.
pub fn config(name: &str) -> ClusterConfig {
    ClusterConfig::new(name, holdfast_bin())
}

/// One node (`n1`) on loopback; instance ports from `ports_from`.
pub fn one_node(name: &str, ports_from: u16) -> Cluster {
    Cluster::form(config(name).plain(1).ports_from(ports_from))
}

/// A founder and joined nodes, one per entry of `sites`, on loopback.
pub fn cluster(name: &str, ports_from: u16, sites: &[&str]) -> Cluster {
    Cluster::form(config(name).sites(sites).ports_from(ports_from))
}

/// The demo web service of most tests: `replicas` of holdfast-demo-web (port `http`
/// 8080, health-checked every 300 ms) in `project`, routed from `route` when given.
pub fn demo_web(project: &str, replicas: u32, route: Option<&str>) -> String {
    let mut spec = format!(
        "project: {project}\nservices:\n  web:\n    run: [\"holdfast-demo-web\"]\n    replicas: {replicas}\n    ports: {{http: 8080}}\n    health: {{http: /healthz, interval: 300ms, timeout: 300ms}}\n"
    );
    if let Some(host) = route {
        spec.push_str(&format!("routes:\n  - {{host: {host}, service: web}}\n"));
    }
    spec
}

/// A self-signed ECDSA P-256 certificate and its key made by the real openssl:
/// `dir/<stem>.pem` and `dir/<stem>.key`, for the subject alternative names `san` (e.g.
/// `DNS:a.example,IP:127.0.0.1`), with `extra` arguments for `openssl req` (e.g. more
/// `-addext`). Returns their paths as strings.
pub fn openssl_self_signed(dir: &std::path::Path, stem: &str, san: &str, extra: &[&str]) -> (String, String) {
    let (cert, key) = (dir.join(format!("{stem}.pem")), dir.join(format!("{stem}.key")));
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30"])
        .args(["-subj", &format!("/CN={stem}"), "-addext", &format!("subjectAltName={san}")])
        .args(extra)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    (cert.to_string_lossy().into_owned(), key.to_string_lossy().into_owned())
}

/// A request to `target`'s holdfast port with `who`'s node certificate and key (real
/// curl): (HTTP code, body); code 0 when no HTTP answer came (a TLS failure).
pub fn curl_with_cert(who: &Node, target: &Node, method: &str, path: &str) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "--max-time", "5", "-X", method])
        .args(if method == "POST" { &["-d", "{}"][..] } else { &[][..] })
        .arg("--cacert")
        .arg(who.dir.join("ca.pem"))
        .arg("--cert")
        .arg(who.dir.join("node.pem"))
        .arg("--key")
        .arg(who.dir.join("node.key"))
        .arg(format!("https://{}{path}", target.addr()))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}
