//! End-to-end test of `/metrics`: a real `holdfast` node scraped with curl as Prometheus
//! scrapes a kubelet (HTTPS, the cluster CA, a bearer token), parsed by the Python
//! prometheus_client OpenMetrics parser. It starts with one sentence of what it proves.
mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

const PARSER: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append({"family": family.name, "type": family.type, "name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;

/// curl the node's /metrics with `token`: (HTTP code, body).
fn scrape(d: &Node, token: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--max-time", "5", "-w", "\n%{http_code}", "--cacert"]).arg(d.dir.join("ca.pem"));
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd.arg(format!("https://{}/metrics", d.addr())).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The samples of an OpenMetrics text, parsed by prometheus_client (a parse error fails).
fn parse(py: &std::path::Path, text: &str) -> Vec<Value> {
    use std::io::Write;
    let mut child = Command::new(py)
        .args(["-c", PARSER])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("parser");
    assert!(out.status.success(), "the parser refused the page: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("parser output")
}

/// The value of the sample `name` whose labels include `labels`.
fn value(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .and_then(|s| s["value"].as_f64())
}

#[test]
fn metrics_parse_with_a_real_parser_need_a_token_and_move_with_requests() {
    // Proves: /metrics answers only with a token that may read (admin or `read`; not a
    // token that may only set a secret), parses with prometheus_client's OpenMetrics parser, names the node,
    // its instances and the control plane, and its per-route request counter and latency
    // histogram count exactly the requests sent through the ingress.
    let Some(py) = common::pg::python() else { return };
    let has = Command::new(&py).args(["-c", "import prometheus_client"]).output().is_ok_and(|o| o.status.success());
    if !has {
        assert!(std::env::var("CI").is_err(), "CI must have prometheus_client (scripts/pyenv.sh)");
        eprintln!("skipping: no prometheus_client in HOLDFAST_TEST_PYTHON");
        return;
    }
    let nodes = one_node("metrics", 47400);
    let d = &nodes[0];
    let (ok, out, err) = d.deploy_yaml("web.yaml", &demo_web("metrics", 2, Some("m.localhost")));
    assert!(ok, "{out}\n{err}");
    d.wait_ready("web", 2, Duration::from_secs(30));
    for _ in 0..5 {
        assert_eq!(d.ingress("m.localhost", "/").0, 200);
    }
    let admin = std::fs::read_to_string(d.dir.join("admin.token")).expect("admin token");
    let admin = admin.trim();

    let (code, text) = scrape(d, Some(admin));
    assert_eq!(code, 200, "{text}");
    assert!(text.ends_with("# EOF\n"), "an OpenMetrics page ends with # EOF");
    let samples = parse(&py, &text);
    assert_eq!(value(&samples, "holdfast_node_info", &[("node", "n1")]), Some(1.0), "{text}");
    assert_eq!(value(&samples, "holdfast_raft_leader", &[]), Some(1.0));
    assert!(value(&samples, "holdfast_raft_term", &[]) >= Some(1.0));
    assert!(value(&samples, "holdfast_raft_leader_changes_total", &[]) >= Some(1.0), "the first election");
    assert!(value(&samples, "holdfast_raft_commit_duration_seconds_count", &[]) >= Some(1.0), "the deploy committed");
    for i in ["web-0", "web-1"] {
        assert_eq!(value(&samples, "holdfast_instance_ready", &[("instance", i)]), Some(1.0), "{i}");
    }
    let route = [("route", "m.localhost/"), ("service", "web")];
    let ok2xx = [("route", "m.localhost/"), ("service", "web"), ("code", "2xx")];
    assert_eq!(value(&samples, "holdfast_http_requests_total", &ok2xx), Some(5.0), "{text}");
    assert_eq!(value(&samples, "holdfast_http_request_duration_seconds_count", &route), Some(5.0));
    let inf = [("route", "m.localhost/"), ("le", "+Inf")];
    assert_eq!(value(&samples, "holdfast_http_request_duration_seconds_bucket", &inf), Some(5.0));

    // The counters move with traffic.
    for _ in 0..3 {
        assert_eq!(d.ingress("m.localhost", "/").0, 200);
    }
    assert_eq!(d.ingress("m.localhost", "/nothing-here").0, 404);
    let samples = parse(&py, &scrape(d, Some(admin)).1);
    assert_eq!(value(&samples, "holdfast_http_requests_total", &ok2xx), Some(8.0));
    let not_found = [("route", "m.localhost/"), ("code", "4xx")];
    assert_eq!(value(&samples, "holdfast_http_requests_total", &not_found), Some(1.0));
    assert_eq!(value(&samples, "holdfast_http_request_duration_seconds_count", &route), Some(9.0));

    // Tokens: none → 401; a read token → 200; a token that may only set a secret → 403.
    assert_eq!(scrape(d, None).0, 401);
    let read = d.cli_json(&["acl", "token", "create", "--scope", "read", "--name", "prometheus"]).expect("read token");
    assert_eq!(scrape(d, read["token"].as_str()).0, 200);
    let writer = d.cli_json(&["acl", "token", "create", "--scope", "secrets:metrics/x", "--name", "w"]).expect("token");
    assert_eq!(scrape(d, writer["token"].as_str()).0, 403);
    nodes.finish();
}
