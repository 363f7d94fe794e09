//! End-to-end tests of the edge role: real `holdfast` processes, two of them edges on
//! their own public (loopback) addresses, real curl (HTTP/1.1, HTTP/2, HTTPS with SNI),
//! real openssl for certificates and handshakes, real dig against the authoritative DNS.
//! Each test starts with one sentence of what it proves.
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// The public addresses and ports of the two edges.
const EDGE_IPS: [&str; 2] = ["127.12.0.1", "127.12.0.2"];
const HTTP: u16 = 47801;
const HTTPS: u16 = 47802;
const DNS: u16 = 47803;

fn edge_flags(ip: &str) -> Vec<String> {
    [
        "--edge",
        "--public-address",
        ip,
        "--edge-http-port",
        &HTTP.to_string(),
        "--edge-https-port",
        &HTTPS.to_string(),
        "--edge-dns-port",
        &DNS.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A self-signed certificate and key (openssl) for `names`, written to `dir/<stem>.pem`
/// and `dir/<stem>.key`.
fn make_cert(dir: &Path, stem: &str, names: &[&str]) -> (String, String) {
    let san = names.iter().map(|n| format!("DNS:{n}")).collect::<Vec<_>>().join(",");
    openssl_self_signed(dir, stem, &san, &[])
}

/// curl with `args`; (HTTP code, HTTP version, body, Location).
fn curl(args: &[&str]) -> (u16, String, String, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "-w", "\n%{http_code} %{http_version} %{redirect_url}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", "0 0 "));
    let mut parts = tail.splitn(3, ' ');
    let code = parts.next().unwrap_or("0").parse().unwrap_or(0);
    let version = parts.next().unwrap_or("").to_string();
    let location = parts.next().unwrap_or("").trim().to_string();
    (code, version, body.to_string(), location)
}

/// `https://host/path` through the edge at `ip`, trusting `ca`.
fn https(host: &str, ip: &str, ca: &str, extra: &[&str]) -> (u16, String, String, String) {
    let resolve = format!("{host}:{HTTPS}:{ip}");
    let url = format!("https://{host}:{HTTPS}/");
    let mut args = vec!["--resolve", &resolve, "--cacert", ca];
    args.extend_from_slice(extra);
    args.push(&url);
    curl(&args)
}

/// `http://host/` through the edge at `ip`.
fn http(host: &str, ip: &str) -> (u16, String, String, String) {
    let resolve = format!("{host}:{HTTP}:{ip}");
    let url = format!("http://{host}:{HTTP}/");
    curl(&["--resolve", &resolve, &url])
}

/// `dig +short` (or full with `short = false`) at the edge `ip`.
fn dig(ip: &str, name: &str, rtype: &str, extra: &[&str]) -> String {
    let server = format!("@{ip}");
    let port = DNS.to_string();
    let out = Command::new("dig")
        .args([server.as_str(), "-p", &port, "+time=2", "+tries=1", name, rtype])
        .args(extra)
        .output()
        .expect("dig");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn dig_short(ip: &str, name: &str, rtype: &str) -> Vec<String> {
    let mut lines: Vec<String> = dig(ip, name, rtype, &["+short"]).lines().map(str::to_string).collect();
    lines.sort();
    lines
}

fn spec(project: &str) -> String {
    format!(
        r#"project: {project}
secrets:
  cert: {{}}
  key: {{}}
services:
  web:
    run: ["holdfast-demo-web"]
    replicas: 2
    ports: {{http: 8080}}
    health: {{http: /healthz, interval: 300ms, timeout: 300ms}}
routes:
  - {{host: a.edge.test, service: web, tls: {{cert: cert, key: key}}, https_redirect: true, timeout: 5s}}
  - {{host: "*.apps.edge.test", service: web, tls: {{cert: cert, key: key}}}}
  - {{host: plain.edge.test, service: web}}
dns:
  zones:
    - name: edge.test
      ttl: 5
      records:
        - {{name: "@", type: MX, value: "10 mail.example.net"}}
        - {{name: "@", type: TXT, value: "v=spf1 -all"}}
        - {{name: www, type: CNAME, value: a.edge.test}}
        - {{name: "@", type: CAA, value: '0 issue "letsencrypt.org"'}}
"#
    )
}

#[test]
fn two_edges_serve_http_https_h2_and_dns_and_a_dead_edge_leaves_the_answers_within_2s() {
    // Proves: two edge nodes (and one plain node) serve every route over HTTP and HTTPS
    // with the certificate from the project's secrets chosen by SNI (a wildcard too),
    // negotiate HTTP/2 by ALPN, redirect HTTP to HTTPS where the route asks, refuse a
    // handshake for a name no certificate covers, log every request, and answer the zone
    // authoritatively (SOA, NS with glue, MX, TXT, CNAME, CAA, routed hosts with both
    // edges, NXDOMAIN, REFUSED outside, over UDP and TCP); a SIGKILLed edge leaves the
    // other's answers within 2 s and comes back when it restarts; a certificate that
    // does not match its route's host is refused at deploy with nothing changed.
    let cfg = config("edge2")
        .node(&edge_flags(EDGE_IPS[0]).iter().map(String::as_str).collect::<Vec<_>>())
        .node(&edge_flags(EDGE_IPS[1]).iter().map(String::as_str).collect::<Vec<_>>())
        .plain(1)
        .ports_from(47000);
    let mut nodes = Cluster::form(cfg);
    let d = &nodes[0];
    let (cert, key) = make_cert(&d.home, "edge", &["a.edge.test", "*.apps.edge.test"]);
    for (name, file) in [("edge2/cert", &cert), ("edge2/key", &key)] {
        d.cli_json(&["secret", "set", name, "--from-file", file]).unwrap_or_else(|e| panic!("{e}"));
    }
    let (ok, out, err) = d.deploy_yaml("edge.yaml", &spec("edge2"));
    assert!(ok, "{out}\n{err}");
    d.wait_ready("web", 2, Duration::from_secs(30));

    // HTTPS through each edge, HTTP/2 by ALPN, the wildcard, the redirect, plain HTTP.
    for ip in EDGE_IPS {
        let (code, version, body, _) = wait_for(&format!("https via {ip}"), Duration::from_secs(20), || {
            let r = https("a.edge.test", ip, &cert, &[]);
            seen_unless(r.0 == 200, r.clone(), format!("{r:?}"))
        });
        assert_eq!((code, version.as_str()), (200, "2"), "h2 negotiated by ALPN: {body}");
        let (code, version, _, _) = https("x.apps.edge.test", ip, &cert, &["--http1.1"]);
        assert_eq!((code, version.as_str()), (200, "1.1"), "the wildcard certificate over HTTP/1.1");
        let (code, _, _, location) = http("a.edge.test", ip);
        assert_eq!((code, location.as_str()), (301, format!("https://a.edge.test:{HTTPS}/").as_str()));
        let (code, version, body, _) = http("plain.edge.test", ip);
        assert_eq!((code, version.as_str()), (200, "1.1"), "a route without tls over plain HTTP: {body}");
        // No certificate covers this name: the handshake fails, no other site's certificate.
        let (code, ..) = https("nothing.other.test", ip, &cert, &[]);
        assert_eq!(code, 0, "a handshake for a name no certificate covers must fail");
    }
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("{}:{HTTPS}", EDGE_IPS[1]), "-servername", "b.apps.edge.test"])
        .args(["-alpn", "h2,http/1.1"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl s_client");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("ALPN protocol: h2"), "{text}");

    // The access log of an edge has the requests.
    let log = wait_for("access log lines", Duration::from_secs(5), || {
        let text = std::fs::read_to_string(nodes[0].dir.join("logs").join("access.log")).unwrap_or_default();
        seen_unless(text.contains("a.edge.test \"GET /\" 200"), text.clone(), text.len())
    });
    assert!(log.contains(" https h2 a.edge.test \"GET /\" 200 "), "{log}");
    assert!(log.contains(" http http/1.1 a.edge.test \"GET /\" 301 "), "{log}");
    assert!(log.contains("route=a.edge.test/ service=web instance=web-"), "{log}");

    // DNS: the zone at each edge.
    for ip in EDGE_IPS {
        let a = wait_for(&format!("a.edge.test A at {ip}"), Duration::from_secs(10), || {
            let a = dig_short(ip, "a.edge.test", "A");
            seen_unless(a == EDGE_IPS, a.clone(), format!("{a:?}"))
        });
        assert_eq!(a, EDGE_IPS);
        assert_eq!(dig_short(ip, "y.apps.edge.test", "A"), EDGE_IPS);
        assert_eq!(dig_short(ip, "edge.test", "NS"), ["ns1.edge.test.", "ns2.edge.test."]);
        assert_eq!(dig_short(ip, "ns2.edge.test", "A"), [EDGE_IPS[1]]);
        assert_eq!(dig_short(ip, "edge.test", "MX"), ["10 mail.example.net."]);
        assert_eq!(dig_short(ip, "edge.test", "TXT"), ["\"v=spf1 -all\""]);
        assert_eq!(dig_short(ip, "edge.test", "CAA"), ["0 issue \"letsencrypt.org\""]);
        assert_eq!(dig_short(ip, "www.edge.test", "CNAME"), ["a.edge.test."]);
        let soa = dig(ip, "edge.test", "SOA", &["+norec"]);
        assert!(soa.contains("status: NOERROR") && soa.contains(" aa") && soa.contains("ns1.edge.test."), "{soa}");
        let nx = dig(ip, "nope.edge.test", "A", &[]);
        assert!(nx.contains("status: NXDOMAIN") && nx.contains("SOA"), "{nx}");
        let nodata = dig(ip, "a.edge.test", "MX", &[]);
        assert!(nodata.contains("status: NOERROR") && nodata.contains("ANSWER: 0"), "{nodata}");
        let refused = dig(ip, "example.org", "A", &[]);
        assert!(refused.contains("status: REFUSED"), "not a resolver: {refused}");
        let tcp = dig(ip, "a.edge.test", "A", &["+tcp", "+short"]);
        assert_eq!(tcp.lines().count(), 2, "{tcp}");
    }

    // `holdfast routes`: the routes, both edges in DNS, and each edge's counters.
    let routes = nodes[0].cli_json(&["routes"]).unwrap_or_else(|e| panic!("{e}"));
    let live: Vec<bool> = routes["edges"].as_array().unwrap().iter().map(|e| e["live"] == true).collect();
    assert_eq!(live, [true, true], "{routes}");
    assert_eq!(routes["routes"][0]["tls"], "secrets cert key", "{routes}");
    let n1 = routes["nodes"].as_array().unwrap().iter().find(|n| n["node"] == "n1").cloned().unwrap();
    let a = n1["routes"].as_array().unwrap().iter().find(|r| r["route"] == "a.edge.test/").cloned().unwrap();
    assert!(a["http_2xx"].as_u64() >= Some(1) && a["http_3xx"].as_u64() >= Some(1), "{a}");
    assert!(n1["tls_handshake_failures"].as_u64() >= Some(1), "{n1}");
    let text = nodes[0].cli_ok(&["routes"]);
    assert!(text.contains("a.edge.test/") && text.contains("IN DNS") && text.contains("REQUESTS"), "{text}");

    // A certificate for another host, set as a new version of the secrets: the edges
    // keep serving the previous certificate (a mistake does not take the site down), and
    // a deploy with it is refused, nothing changed.
    let (wrong_cert, wrong_key) = make_cert(&nodes[0].home, "wrong", &["other.test"]);
    for (name, file) in [("edge2/cert", &wrong_cert), ("edge2/key", &wrong_key)] {
        nodes[0].cli_json(&["secret", "set", name, "--from-file", file]).unwrap_or_else(|e| panic!("{e}"));
    }
    let (ok, out, err) = nodes[0].deploy_yaml("edge.yaml", &spec("edge2"));
    assert!(!ok, "a certificate for other.test must be refused for a.edge.test: {out}");
    assert!(
        err.contains("routes[0] (host a.edge.test, path /): the certificate in secret edge2/cert is for other.test, not a.edge.test"),
        "{err}"
    );
    for ip in EDGE_IPS {
        let (code, ..) = https("a.edge.test", ip, &cert, &[]);
        assert_eq!(code, 200, "the previous certificate is still served at {ip}");
    }
    for (name, file) in [("edge2/cert", &cert), ("edge2/key", &key)] {
        nodes[0].cli_json(&["secret", "set", name, "--from-file", file]).unwrap_or_else(|e| panic!("{e}"));
    }

    // SIGKILL edge 2: edge 1 answers only its own address within 2 s.
    nodes[1].kill9();
    let killed = Instant::now();
    wait_for_every("edge 1 to answer only itself", Duration::from_secs(10), Duration::from_millis(50), || {
        let a = dig_short(EDGE_IPS[0], "a.edge.test", "A");
        seen_unless(a == [EDGE_IPS[0]], (), format!("{a:?}"))
    });
    let left = killed.elapsed();
    eprintln!("edge: a SIGKILLed edge left the DNS answers after {left:?}");
    assert!(left < Duration::from_secs(2), "a dead edge must leave the answers within 2 s (took {left:?})");
    let (code, ..) = https("a.edge.test", EDGE_IPS[0], &cert, &[]);
    assert_eq!(code, 200, "the live edge still serves");
    let routes = nodes[0].cli_json(&["routes"]).unwrap_or_else(|e| panic!("{e}"));
    let live: Vec<bool> = routes["edges"].as_array().unwrap().iter().map(|e| e["live"] == true).collect();
    assert_eq!(live, [true, false], "{routes}");

    // Heal: both again.
    nodes[1].spawn(&[]);
    wait_for("both edges answered again", Duration::from_secs(20), || {
        let a = dig_short(EDGE_IPS[0], "a.edge.test", "A");
        seen_unless(a == EDGE_IPS, (), format!("{a:?}"))
    });
    nodes.finish();
}

#[test]
fn the_site_address_moves_to_another_edge_within_2s_when_its_holder_dies() {
    // Proves: two edges of one site (network namespaces on one bridge) share a moving
    // address; the first holds it and a client on the LAN reaches the routes through it;
    // when the holder's machine dies (processes killed, cable pulled) the other edge takes
    // it with gratuitous ARP and the client is answered again within 2 s; when the first
    // comes back it takes the address back and the other lets it go.
    if !namespaces_or_skip("hfvip") {
        return;
    }
    let vip = "10.99.250.1";
    let mut c = Cluster::prepare(config("hfvip").sites(&["a", "a", "a"]).namespaces());
    for i in [1, 2] {
        let ip = c[i].ip.clone();
        let flags = ["--edge", "--public-address", &ip, "--edge-listen", "0.0.0.0", "--edge-dns-port", "0"];
        c[i].flags.extend(flags.iter().map(|s| s.to_string()));
        c[i].flags.extend(["--site-address".to_string(), format!("{vip}/16")]);
    }
    c[0].start_up();
    for i in [1, 2] {
        let token = c[0].token("5m");
        c[i].start_join(&token);
    }
    c.wait_formed();
    let (ok, out, err) = c[0].deploy_yaml("web.yaml", &demo_web("vip", 2, Some("vip.example")));
    assert!(ok, "{out}\n{err}");
    c[0].wait_ready("web", 2, Duration::from_secs(30));
    // The client is n1 (not an edge), on the same LAN.
    let reach = |c: &Cluster| -> bool {
        let out = c[0].exec(&["curl", "-s", "--max-time", "0.5", "-H", "Host: vip.example", &format!("http://{vip}/")]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("web-")
    };
    let holder = |c: &Cluster, i: usize| -> bool {
        let out = c[i].exec(&["ip", "-o", "addr", "show", "dev", "eth0"]);
        String::from_utf8_lossy(&out.stdout).contains(&format!("{vip}/16"))
    };
    wait_for("n2 holds the site address and it answers", Duration::from_secs(20), || {
        seen_unless(holder(&c, 1) && !holder(&c, 2) && reach(&c), (), (holder(&c, 1), holder(&c, 2)))
    });

    // n2's machine dies.
    c[1].kill_machine();
    c.tb().link_down(1).expect("pull n2's cable");
    let died = Instant::now();
    wait_for_every("the site address answers again", Duration::from_secs(10), Duration::from_millis(50), || {
        seen_unless(reach(&c), (), "no answer")
    });
    let moved = died.elapsed();
    eprintln!("site address: answered again {moved:?} after its holder died");
    assert!(holder(&c, 2), "n3 holds it now");
    assert!(moved < Duration::from_secs(2), "the site address must move within 2 s (took {moved:?})");

    // n2 comes back: it takes the address back, n3 lets it go, and it still answers.
    c.tb().link_up(1).expect("plug n2 back");
    c[1].spawn(&[]);
    wait_for("n2 holds the site address again, n3 not", Duration::from_secs(30), || {
        seen_unless(holder(&c, 1) && !holder(&c, 2) && reach(&c), (), (holder(&c, 1), holder(&c, 2)))
    });
    c.finish();
}

const GRPC_SERVER: &str = r#"
import os
from concurrent import futures
import grpc

def say(request, context):
    return b"hello " + request + b" from " + os.environ["HOLDFAST_INSTANCE"].encode()

def chat(requests, context):
    for r in requests:
        yield b"echo " + r

handler = grpc.method_handlers_generic_handler("holdfast.test.Echo", {
    "Say": grpc.unary_unary_rpc_method_handler(say),
    "Chat": grpc.stream_stream_rpc_method_handler(chat),
})
server = grpc.server(futures.ThreadPoolExecutor(4))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port("127.0.0.1:" + os.environ["PORT"])
server.start()
server.wait_for_termination()
"#;

const GRPC_CLIENT: &str = r#"
import sys
import grpc

target, host, ca = sys.argv[1], sys.argv[2], sys.argv[3]
options = [("grpc.default_authority", host)]
if ca == "-":
    channel = grpc.insecure_channel(target, options=options)
else:
    creds = grpc.ssl_channel_credentials(open(ca, "rb").read())
    channel = grpc.secure_channel(target, creds, options=options + [("grpc.ssl_target_name_override", host)])
say = channel.unary_unary("/holdfast.test.Echo/Say")
print(say(b"grpc", timeout=5).decode())
chat = channel.stream_stream("/holdfast.test.Echo/Chat")
print(",".join(r.decode() for r in chat(iter([b"a", b"b", b"c"]), timeout=5)))
try:
    channel.unary_unary("/holdfast.test.Echo/Nope")(b"x", timeout=5)
except grpc.RpcError as e:
    print(e.code().name)
"#;

#[test]
fn grpc_calls_pass_through_the_edge_over_https_and_h2c() {
    // Proves: a real gRPC server (grpcio, Python) behind the edge answers a real gRPC
    // client over HTTPS (ALPN h2, the certificate by SNI) and over cleartext h2c: a unary
    // call, a bidirectional stream, and a status code from the server's trailers.
    let Some(py) = common::pg::python() else { return };
    let has_grpc = Command::new(&py).args(["-c", "import grpc"]).output().is_ok_and(|o| o.status.success());
    if !has_grpc {
        assert!(std::env::var("CI").is_err(), "CI must have grpcio (scripts/pyenv.sh)");
        eprintln!("skipping: no grpcio in HOLDFAST_TEST_PYTHON");
        return;
    }
    let ip = "127.12.0.9";
    let flags = edge_flags(ip);
    let nodes =
        Cluster::form(config("grpc").node(&flags.iter().map(String::as_str).collect::<Vec<_>>()).ports_from(47600));
    let d = &nodes[0];
    let server = d.home.join("grpc_server.py");
    let client = d.home.join("grpc_client.py");
    std::fs::write(&server, GRPC_SERVER).expect("server script");
    std::fs::write(&client, GRPC_CLIENT).expect("client script");
    let (cert, key) = make_cert(&d.home, "grpc", &["rpc.edge.test"]);
    for (name, file) in [("grpc/cert", &cert), ("grpc/key", &key)] {
        d.cli_json(&["secret", "set", name, "--from-file", file]).unwrap_or_else(|e| panic!("{e}"));
    }
    let spec = format!(
        r#"project: grpc
secrets: {{ cert: {{}}, key: {{}} }}
services:
  rpc:
    run: ["{py}", "{server}"]
    replicas: 1
    ports: {{grpc: 50051}}
    health: {{tcp: grpc, interval: 300ms, timeout: 300ms}}
routes:
  - {{host: rpc.edge.test, service: rpc, tls: {{cert: cert, key: key}}}}
"#,
        py = py.display(),
        server = server.display()
    );
    let (ok, out, err) = d.deploy_yaml("grpc.yaml", &spec);
    assert!(ok, "{out}\n{err}");
    d.wait_ready("rpc", 1, Duration::from_secs(30));
    let call = |target: &str, ca: &str| -> String {
        let out = Command::new(&py).arg(&client).args([target, "rpc.edge.test", ca]).output().expect("python");
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    for (target, ca) in [(format!("{ip}:{HTTPS}"), cert.as_str()), (format!("{ip}:{HTTP}"), "-")] {
        let out = wait_for(&format!("gRPC through {target}"), Duration::from_secs(20), || {
            let out = call(&target, ca);
            seen_unless(out.starts_with("hello grpc from rpc-0"), out.clone(), out)
        });
        assert_eq!(out, "hello grpc from rpc-0\necho a,echo b,echo c\nUNIMPLEMENTED\n", "through {target}");
    }
    nodes.finish();
}
