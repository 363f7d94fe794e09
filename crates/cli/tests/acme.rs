//! End-to-end test of automatic certificates: real `holdfast` processes (the leader is not
//! an edge), pebble (Debian's package, Let's Encrypt's test CA) resolving through the
//! edges' own authoritative DNS and validating HTTP-01 against them, real curl and
//! openssl. It starts with one sentence of what it proves.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

const EDGE_IPS: [&str; 2] = ["127.13.0.2", "127.13.0.3"];
const HTTP: u16 = 48801;
const HTTPS: u16 = 48802;
const DNS: u16 = 48803;
const PEBBLE: u16 = 48810;
const PEBBLE_MGMT: u16 = 48811;
const PEBBLE_TLS: u16 = 48812;

fn edge_flags(ip: &str) -> Vec<String> {
    let ports = [HTTP.to_string(), HTTPS.to_string(), DNS.to_string()];
    let mut flags = vec!["--edge".to_string(), "--public-address".to_string(), ip.to_string()];
    for (flag, port) in ["--edge-http-port", "--edge-https-port", "--edge-dns-port"].iter().zip(ports) {
        flags.extend([flag.to_string(), port]);
    }
    flags
}

/// Pebble, stopped when dropped.
struct Pebble {
    child: Child,
    /// The CA of pebble's own HTTPS listener (for `holdfast cert acme --ca-file`).
    listener_ca: PathBuf,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_pebble(dir: &Path) -> Pebble {
    // An end-entity certificate (webpki refuses a CA certificate as a server's).
    let extra = ["-addext", "basicConstraints=critical,CA:FALSE", "-addext", "extendedKeyUsage=serverAuth"];
    let (cert, key) = openssl_self_signed(dir, "pebble", "IP:127.0.0.1,DNS:localhost", &extra);
    let config = serde_json::json!({ "pebble": {
        "listenAddress": format!("127.0.0.1:{PEBBLE}"),
        "managementListenAddress": format!("127.0.0.1:{PEBBLE_MGMT}"),
        "certificate": cert,
        "privateKey": key,
        "httpPort": HTTP,
        "tlsPort": PEBBLE_TLS,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
    }});
    let config_file = dir.join("pebble.json");
    std::fs::write(&config_file, config.to_string()).expect("pebble config");
    let log = std::fs::File::create(dir.join("pebble.log")).expect("pebble log");
    let child = Command::new("pebble")
        .arg("-config")
        .arg(&config_file)
        // Pebble resolves the names it validates through the first edge's DNS server.
        .args(["-dnsserver", &format!("{}:{DNS}", EDGE_IPS[0])])
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .stdout(Stdio::from(log.try_clone().expect("log")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("pebble (Debian package `pebble`) must be installed");
    let pebble = Pebble { child, listener_ca: PathBuf::from(cert) };
    wait_for("pebble's directory", Duration::from_secs(20), || {
        let out =
            curl(&["--cacert", pebble.listener_ca.to_str().unwrap_or(""), &format!("https://127.0.0.1:{PEBBLE}/dir")]);
        seen_unless(out.contains("newOrder"), (), out)
    });
    pebble
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl").args(["-s", "--max-time", "5"]).args(args).output().expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The serial of the certificate the edge at `ip` serves for `host` (openssl).
fn served_serial(ip: &str, host: &str) -> String {
    let script = format!(
        "openssl s_client -connect {ip}:{HTTPS} -servername {host} </dev/null 2>/dev/null | openssl x509 -noout -serial"
    );
    let out = Command::new("sh").args(["-c", &script]).output().expect("openssl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn cert_of(d: &Node, host: &str) -> Value {
    let certs = d.cli_json(&["cert", "ls"]).unwrap_or_else(|e| panic!("{e}"));
    certs["certs"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["hosts"][0] == host).cloned())
        .unwrap_or_else(|| panic!("no certificate row for {host}: {certs}"))
}

fn issued_events(d: &Node, kind: &str, host: &str) -> usize {
    let ev = d.cli_json(&["events"]).unwrap_or_else(|e| panic!("{e}"));
    ev["events"]
        .as_array()
        .map(|a| {
            a.iter().filter(|e| e["kind"] == kind && e["message"].as_str().is_some_and(|m| m.contains(host))).count()
        })
        .unwrap_or(0)
}

#[test]
fn acme_issues_once_serves_on_both_edges_renews_when_forced_and_reports_a_failed_order() {
    // Proves: with pebble as the CA, a `tls: auto` host gets a certificate ordered by the
    // leader (which is not an edge, so the HTTP-01 challenge is answered by an edge that
    // is not the leader), served by both edges over HTTPS, never ordered again while it
    // is valid, renewed when a user forces it (both edges switch to the new one), and a
    // host the CA cannot validate becomes an event with the CA's error and a backoff.
    let cfg = config("acme")
        .plain(1)
        .node(&edge_flags(EDGE_IPS[0]).iter().map(String::as_str).collect::<Vec<_>>())
        .node(&edge_flags(EDGE_IPS[1]).iter().map(String::as_str).collect::<Vec<_>>())
        .ports_from(48000);
    let nodes = Cluster::form(cfg);
    let d = &nodes[0];
    assert_eq!(nodes.leader_index(0), Some(0), "the founder (not an edge) leads");
    let pebble = start_pebble(&d.home);

    // Bad input first: an http directory and a file that is no certificate change nothing.
    let out = d.cli(&["cert", "acme", "--directory", "http://127.0.0.1/dir"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be an https:// URL"), "{out:?}");
    let ca = pebble.listener_ca.to_str().unwrap_or("");
    let set = d
        .cli_json(&["cert", "acme", "--directory", &format!("https://127.0.0.1:{PEBBLE}/dir"), "--ca-file", ca])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set["acme_custom_ca"], true, "{set}");

    let spec = r#"project: acme
services:
  web:
    run: ["holdfast-demo-web"]
    replicas: 2
    ports: {http: 8080}
    health: {http: /healthz, interval: 300ms, timeout: 300ms}
routes:
  - {host: shop.edge.test, service: web, tls: auto, https_redirect: true}
  - {host: nodns.other.test, service: web, tls: auto}
dns:
  zones:
    - name: edge.test
      ttl: 5
"#;
    let (ok, out, err) = d.deploy_yaml("acme.yaml", spec);
    assert!(ok, "{out}\n{err}");
    d.wait_ready("web", 2, Duration::from_secs(30));

    let cert = wait_for("the certificate of shop.edge.test", Duration::from_secs(60), || {
        let c = cert_of(d, "shop.edge.test");
        seen_unless(c["status"] == "valid", c.clone(), c.to_string())
    });
    assert_eq!(cert["names"], serde_json::json!(["shop.edge.test"]), "{cert}");
    assert!(cert["renew_at_ms"].as_u64() < cert["not_after_ms"].as_u64(), "{cert}");

    // Both edges serve it, trusted through pebble's root.
    let root = d.home.join("pebble-root.pem");
    let root_pem = curl(&["--cacert", ca, &format!("https://127.0.0.1:{PEBBLE_MGMT}/roots/0")]);
    assert!(root_pem.contains("BEGIN CERTIFICATE"), "{root_pem}");
    std::fs::write(&root, root_pem).expect("root");
    for ip in EDGE_IPS {
        let code = wait_for(&format!("https via {ip}"), Duration::from_secs(20), || {
            let out = curl(&[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--resolve",
                &format!("shop.edge.test:{HTTPS}:{ip}"),
                "--cacert",
                root.to_str().unwrap_or(""),
                &format!("https://shop.edge.test:{HTTPS}/"),
            ]);
            seen_unless(out == "200", out.clone(), out)
        });
        assert_eq!(code, "200");
    }
    // The challenge was fetched from an edge (pebble's validation in an edge's access log).
    let logs: String = nodes[1..]
        .iter()
        .map(|n| std::fs::read_to_string(n.dir.join("logs").join("access.log")).unwrap_or_default())
        .collect();
    assert!(logs.contains("\"GET /.well-known/acme-challenge/"), "{logs}");

    // Valid: never ordered again on its own. The leader's loop passes with nothing due
    // (after the failing host's order too, which then waits for its backoff).
    wait_for("a pass of the certificates loop with nothing due", Duration::from_secs(90), || {
        let w = d.cli_json(&["workers"]).unwrap_or_else(|e| panic!("{e}"));
        let me = w["workers"].as_array().and_then(|a| a.iter().find(|x| x["name"] == "certificates").cloned());
        let steady = me.as_ref().is_some_and(|m| m["last_run_ms"].as_u64() > m["last_progress_ms"].as_u64());
        seen_unless(steady, (), format!("{me:?}"))
    });
    assert_eq!(issued_events(d, "certificate-issued", "shop.edge.test"), 1);

    // Forced renewal: a new certificate, served by both edges.
    let before: Vec<String> = EDGE_IPS.iter().map(|ip| served_serial(ip, "shop.edge.test")).collect();
    assert!(before[0].starts_with("serial=") && before[0] == before[1], "{before:?}");
    d.cli_json(&["cert", "renew", "shop.edge.test"]).unwrap_or_else(|e| panic!("{e}"));
    wait_for("a second certificate", Duration::from_secs(60), || {
        let n = issued_events(d, "certificate-issued", "shop.edge.test");
        seen_unless(n == 2, (), n)
    });
    wait_for("both edges serve the new certificate", Duration::from_secs(20), || {
        let after: Vec<String> = EDGE_IPS.iter().map(|ip| served_serial(ip, "shop.edge.test")).collect();
        seen_unless(after.iter().all(|s| s.starts_with("serial=") && !before.contains(s)), (), format!("{after:?}"))
    });

    // A key rotation reseals the account and certificate keys with every other secret.
    let rotated = d.cli_json(&["secret", "rotate-key"]).unwrap_or_else(|e| panic!("{e}"));
    assert!(rotated["resealed"].as_u64() >= Some(2), "the ACME account and key were resealed: {rotated}");
    wait_for("the certificate readable under the new key", Duration::from_secs(20), || {
        let c = cert_of(d, "shop.edge.test");
        seen_unless(c["status"] == "valid", (), c.to_string())
    });

    // A host the CA cannot validate: an event with its error, and a backoff.
    let failed = wait_for("the failed order of nodns.other.test", Duration::from_secs(60), || {
        let c = cert_of(d, "nodns.other.test");
        seen_unless(c["failures"].as_u64() >= Some(1), c.clone(), c.to_string())
    });
    assert!(failed["last_error"].as_str().is_some_and(|e| e.contains("nodns.other.test")), "{failed}");
    assert!(failed["next_attempt_ms"].as_u64().is_some(), "{failed}");
    assert!(issued_events(d, "certificate-order-failed", "nodns.other.test") >= 1);
    let out = d.cli(&["cert", "renew", "unknown.test"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no `tls: auto` route serves unknown.test"), "{out:?}");
    drop(pebble);
    nodes.finish();
}
