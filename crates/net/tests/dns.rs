//! The internal DNS server, queried with dig over UDP and TCP.

mod common;

use common::*;

async fn dig(node: &Node, args: &[&str]) -> String {
    let server = format!("@{}", node.dns.ip());
    let port = node.dns.port().to_string();
    let mut all = vec![server.as_str(), "-p", port.as_str(), "+time=2", "+tries=1"];
    all.extend_from_slice(args);
    let (code, out) = run("dig", &all).await;
    assert_eq!(code, 0, "dig {args:?}: {out}");
    out
}

fn status(out: &str) -> &str {
    out.split("status: ").nth(1).and_then(|s| s.split(',').next()).unwrap_or("?")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_answers_follow_the_table() {
    if !have("dig") {
        return;
    }
    let node = start_node().await;
    let ip = service_ip();
    let services = vec![service("demo", "web", ip, 8080, vec![]), service("demo", "db", service_ip(), 5432, vec![])];
    node.net.update(table(services, vec![]));

    for transport in ["+notcp", "+tcp"] {
        assert_eq!(dig(&node, &[transport, "+short", "web.demo.internal", "A"]).await.trim(), ip.to_string());
        assert_eq!(dig(&node, &[transport, "+short", "WEB.demo.internal.", "A"]).await.trim(), ip.to_string());
        assert_eq!(dig(&node, &[transport, "+short", "web.internal", "A"]).await.trim(), ip.to_string(), "short name");
        assert_eq!(
            dig(&node, &[transport, "+short", "_http._tcp.web.demo.internal", "SRV"]).await.trim(),
            "0 0 8080 web.demo.internal."
        );
    }

    let srv = dig(&node, &["_http._tcp.web.demo.internal", "SRV"]).await;
    assert_eq!(status(&srv), "NOERROR");
    assert!(srv.contains(" aa"), "authoritative: {srv}");
    let additional = srv.split(";; ADDITIONAL SECTION:").nth(1).unwrap_or_default();
    assert!(additional.contains(&format!("web.demo.internal.\t5\tIN\tA\t{ip}")), "A in additional: {srv}");

    let nx = dig(&node, &["nope.demo.internal", "A"]).await;
    assert_eq!(status(&nx), "NXDOMAIN", "{nx}");
    assert!(nx.contains(";; AUTHORITY SECTION:") && nx.contains("SOA"), "SOA in authority: {nx}");
    let nx_tcp = dig(&node, &["+tcp", "_grpc._tcp.web.demo.internal", "SRV"]).await;
    assert_eq!(status(&nx_tcp), "NXDOMAIN", "{nx_tcp}");
    let nodata = dig(&node, &["web.demo.internal", "AAAA"]).await;
    assert_eq!(status(&nodata), "NOERROR", "{nodata}");
    assert!(nodata.contains("ANSWER: 0") && nodata.contains("SOA"), "{nodata}");
    let refused = dig(&node, &["example.com", "A"]).await;
    assert_eq!(status(&refused), "REFUSED", "{refused}");
    let soa = dig(&node, &["+short", "internal", "SOA"]).await;
    assert!(soa.starts_with("ns.internal. hostmaster.internal. 1 "), "{soa}");

    // An update changes the answers at once.
    let ip2 = service_ip();
    node.net.update(table(vec![service("demo", "web", ip2, 9090, vec![])], vec![]));
    assert_eq!(dig(&node, &["+short", "web.demo.internal", "A"]).await.trim(), ip2.to_string());
    assert_eq!(
        dig(&node, &["+short", "_http._tcp.web.demo.internal", "SRV"]).await.trim(),
        "0 0 9090 web.demo.internal."
    );
    assert_eq!(status(&dig(&node, &["db.demo.internal", "A"]).await), "NXDOMAIN");
    assert!(dig(&node, &["+short", "internal", "SOA"]).await.contains(" 2 "), "serial follows updates");

    let stats = node.net.stats();
    assert!(stats.dns_queries >= 18 && stats.dns_nxdomain >= 3 && stats.dns_refused == 1, "{stats:?}");
    node.net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_short_names_need_one_owner_and_other_domains_work() {
    if !have("dig") {
        return;
    }
    let config = holdfast_net::NetConfig {
        dns_listen: Some("127.0.0.1:0".parse().unwrap()),
        domain: "hf.test.".into(),
        dns_ttl: 30,
        ..Default::default()
    };
    let net = holdfast_net::Net::start(config).await.unwrap();
    let dns = net.bound()[0].1;
    let node = Node { net, http: dns, dns };
    let (ip1, ip2) = (service_ip(), service_ip());
    node.net
        .update(table(vec![service("one", "db", ip1, 5432, vec![]), service("two", "db", ip2, 5432, vec![])], vec![]));
    assert_eq!(dig(&node, &["+short", "db.one.hf.test", "A"]).await.trim(), ip1.to_string());
    assert_eq!(dig(&node, &["+short", "db.two.hf.test", "A"]).await.trim(), ip2.to_string());
    let ambiguous = dig(&node, &["db.hf.test", "A"]).await;
    assert!(ambiguous.contains("ANSWER: 0"), "two projects have `db`: no short answer: {ambiguous}");
    let ttl = dig(&node, &["+noall", "+answer", "db.one.hf.test", "A"]).await;
    assert!(ttl.contains("\t30\tIN\tA\t"), "{ttl}");
    assert_eq!(status(&dig(&node, &["db.one.internal", "A"]).await), "REFUSED");
    node.net.shutdown().await;
}
