//! End-to-end tests of service networking on one node: the HTTP ingress, the service
//! address proxy and the internal DNS, with real curl and dig. Each test starts with one
//! sentence of what it proves.
mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn service_address(d: &Node, name: &str) -> String {
    service_of(&d.status(), name)["address"].as_str().expect("address").to_string()
}

fn via_address(d: &Node, addr: &str, port: u16) -> Option<String> {
    let out = d.exec(&["curl", "-sf", "--max-time", "3", &format!("http://{addr}:{port}/")]);
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn dig(d: &Node, name: &str, kind: &str) -> String {
    let server = format!("@{}", d.ip);
    let port = d.dns_port.to_string();
    let out = d.exec(&["dig", "+short", "+time=2", "+tries=1", &server, "-p", &port, name, kind]);
    assert!(out.status.success() || !out.stdout.is_empty(), "dig (package dnsutils) failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn ingress_service_address_and_dns_reach_the_service() {
    // Proves: the ingress routes by Host, the stable service address balances over the
    // replicas, and the node's DNS answers A and SRV for <service>.<project>.internal.
    let c = one_node("net1", 26000);
    let d = &c[0];
    let (ok, out, err) = d.deploy_yaml("web.yaml", &demo_web("net1", 3, Some("demo.localhost")));
    assert!(ok, "{out}\n{err}");
    d.wait_ready("web", 3, Duration::from_secs(20));
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let (code, body) = d.ingress("demo.localhost", "/");
        assert_eq!(code, 200, "{body}");
        seen.insert(body.split_whitespace().nth(2).unwrap_or("").to_string());
    }
    assert_eq!(seen.len(), 3, "every replica answered through the ingress: {seen:?}");
    let (code, body) = d.ingress("nope.localhost", "/");
    assert_eq!((code, body.contains("no route for host")), (404, true), "{body}");
    let addr = service_address(d, "web");
    let body = via_address(d, &addr, 8080).expect("the service address answers");
    assert!(body.starts_with("hello from web-"), "{body}");
    assert_eq!(dig(d, "web.net1.internal", "A"), addr);
    assert_eq!(dig(d, "_http._tcp.web.net1.internal", "SRV"), "0 0 8080 web.net1.internal.");
    assert_eq!(dig(d, "nope.net1.internal", "A"), "");
    // Workloads learn the service address from their environment and reach their
    // replicas through it.
    let (code, body) = d.ingress("demo.localhost", "/peer");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(&format!("asked its service address {addr}:8080 and got: hello from web-")), "{body}");
}

#[test]
fn killing_an_instance_under_load_fails_no_request() {
    // Proves: with one instance SIGKILLed in the middle of a request loop, every request
    // through the ingress and through the service address still succeeds (retry on
    // another instance), and the killed instance comes back into rotation.
    let c = one_node("net2", 26100);
    let d = &c[0];
    let (ok, out, err) = d.deploy_yaml("web.yaml", &demo_web("net2", 3, Some("demo.localhost")));
    assert!(ok, "{out}\n{err}");
    let st = d.wait_ready("web", 3, Duration::from_secs(20));
    let victim = service_of(&st, "web")["instances"][1].clone();
    let addr = service_address(d, "web");
    let mut failures = Vec::new();
    for i in 0..300 {
        if i == 100 {
            signal(victim["pid"].as_u64().expect("pid") as u32, libc_sig::KILL);
        }
        let (code, body) = d.ingress("demo.localhost", "/");
        if code != 200 {
            failures.push(format!("ingress #{i}: {code} {body}"));
        }
        if via_address(d, &addr, 8080).is_none() {
            failures.push(format!("service address #{i} failed"));
        }
    }
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    let back = wait_for("web-1 back and ready", Duration::from_secs(20), || {
        let i = d.instances("web").into_iter().find(|i| i["name"] == "web-1").ok_or("no web-1")?;
        seen_unless(i["ready"] == true && i["pid"] != victim["pid"], i.clone(), i.to_string())
    });
    wait_for("web-1 answers through the ingress again", Duration::from_secs(10), || {
        let (code, body) = d.ingress("demo.localhost", "/");
        seen_unless(body.contains("from web-1"), (), format!("{code} {body}"))
    });
    assert!(back["restarts"].as_u64().unwrap_or(0) >= 1);
}

#[test]
fn unhealthy_instances_leave_rotation_and_no_ready_backend_is_a_clear_503() {
    // Proves: an instance failing its health check stops receiving requests within about
    // one check interval, comes back when healthy, and with no ready instance the ingress
    // answers 503 with a short clear body.
    let c = one_node("net3", 26200);
    let d = &c[0];
    let dir = d.home.clone();
    for i in 0..2 {
        std::fs::write(dir.join(format!("ok-{i}")), "").expect("flag");
    }
    let yaml = format!(
        r#"
project: net3
services:
  web:
    run: "exec holdfast-demo-web"
    replicas: 2
    ports: {{http: 8080}}
    health:
      exec: ["sh", "-c", "test -f {}/ok-$HOLDFAST_REPLICA"]
      interval: 300ms
      timeout: 300ms
      unhealthy_threshold: 1
routes:
  - {{host: demo.localhost, service: web}}
"#,
        dir.display()
    );
    let (ok, out, err) = d.deploy_yaml("web.yaml", &yaml);
    assert!(ok, "{out}\n{err}");
    d.wait_ready("web", 2, Duration::from_secs(20));
    std::fs::remove_file(dir.join("ok-1")).expect("rm");
    let removed = std::time::Instant::now();
    wait_for("web-1 unready", Duration::from_secs(5), || {
        let all = d.instances("web");
        seen_unless(all.iter().any(|i| i["name"] == "web-1" && i["ready"] == false), (), Value::from(all))
    });
    // Out of rotation: every request now lands on web-0.
    for _ in 0..20 {
        let (code, body) = d.ingress("demo.localhost", "/");
        assert_eq!(code, 200);
        assert!(body.contains("from web-0"), "an unready instance got a request: {body}");
    }
    eprintln!("web-1 out of rotation within {:?}", removed.elapsed());
    std::fs::remove_file(dir.join("ok-0")).expect("rm");
    let (code, body) = wait_for("a 503", Duration::from_secs(5), || {
        let r = d.ingress("demo.localhost", "/");
        seen_unless(r.0 == 503, r.clone(), r)
    });
    assert_eq!(code, 503);
    assert!(body.contains("no ready instance of service") && body.len() < 200, "{body}");
    std::fs::write(dir.join("ok-1"), "").expect("flag");
    wait_for("web-1 back in rotation", Duration::from_secs(5), || {
        let (code, body) = d.ingress("demo.localhost", "/");
        seen_unless(code == 200 && body.contains("from web-1"), (), format!("{code} {body}"))
    });
}

#[test]
fn bad_routes_are_refused_precisely_and_change_nothing() {
    // Proves: a route to a missing service, a duplicate route and an invalid host name are
    // refused with file:line errors, and the running routes keep working.
    let c = one_node("net4", 26300);
    let d = &c[0];
    let web = demo_web("net4", 3, Some("demo.localhost"));
    let (ok, _, err) = d.deploy_yaml("web.yaml", &web);
    assert!(ok, "{err}");
    d.wait_ready("web", 3, Duration::from_secs(20));
    let revision: Value = d.status()["control_plane"]["revision"].clone();
    let cases = [
        ("missing.yaml", web.replace("service: web}", "service: api}"), "route to unknown service `api`"),
        (
            "dup.yaml",
            web.replace(
                "  - {host: demo.localhost, service: web}",
                "  - {host: demo.localhost, service: web}\n  - {host: demo.localhost, service: web}",
            ),
            "duplicate route",
        ),
        ("host.yaml", web.replace("demo.localhost", "bad_host!.example"), "bad_host!.example"),
    ];
    for (file, yaml, expect) in cases {
        let (ok, _, err) = d.deploy_yaml(file, &yaml);
        assert!(!ok, "{file} must be refused");
        assert!(err.contains(expect) && err.contains(&format!("{file}:")), "{file}: {err}");
    }
    assert_eq!(d.status()["control_plane"]["revision"], revision);
    assert_eq!(d.ingress("demo.localhost", "/").0, 200);
}
