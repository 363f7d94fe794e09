//! Edge routes' TLS options and authoritative DNS zones: a full example parses to the exact
//! canonical model (and re-validates), and every rule has a case with its exact diagnostic.

mod common;
use common::{check_errs_exactly, check_ok, dedent};

use holdfast_spec::{
    parse_sources, RecordSpec, RecordType, RouteSpec, RouteTls, Stack, ZoneSpec, DEFAULT_ROUTE_PATH, DEFAULT_ZONE_TTL,
};

const FULL: &str = r#"
project: shop
secrets:
  shop-cert: {}
  shop-key: {}
services:
  web:
    run: [srv]
    ports: { http: 8080 }
routes:
  - host: shop.example.com
    service: web
    tls: { cert: shop-cert, key: shop-key }
    https_redirect: true
    timeout: 30s
  - host: www.example.org
    service: web
    tls: auto
    https_redirect: false
  - host: "*.dev.example.com"
    service: web
    tls: { cert: shop-cert, key: shop-key }
    timeout: 1m30s
  - host: plain.example.org
    service: web
dns:
  zones:
    - name: Example.COM.
      ttl: 1m
      records:
        - { name: "@", type: a, value: 192.0.2.1 }
        - { name: "@", type: AAAA, value: "2001:DB8:0::1" }
        - { name: "@", type: MX, value: 10 Mail.Example.NET }
        - { name: "@", type: TXT, value: "v=spf1 mx -all" }
        - { name: "@", type: CAA, value: 0 issue letsencrypt.org }
        - { name: Blog, type: Cname, value: blogs.example.net, ttl: 300 }
        - { name: _sip._tcp, type: SRV, value: "10 5 5060 sip.example.net." }
        - { name: "*.static", type: A, value: 192.0.2.7, ttl: 1h }
    - name: example.org
      records:
        - name: mail
          type: a
          value: 192.0.2.25
        - name: "@"
          type: caa
          value: '0 iodef "mailto:security@example.org"'
"#;

fn route(host: &str, tls: RouteTls, https_redirect: bool, timeout_ms: Option<u64>) -> RouteSpec {
    RouteSpec {
        host: host.into(),
        path: DEFAULT_ROUTE_PATH.into(),
        service: "web".into(),
        port: "http".into(),
        tls,
        https_redirect,
        timeout_ms,
    }
}

fn record(name: &str, rtype: RecordType, value: &str, ttl: Option<u32>) -> RecordSpec {
    RecordSpec { name: name.into(), rtype, value: value.into(), ttl }
}

#[test]
fn full_example_parses_to_the_canonical_model() {
    let stack = check_ok(FULL);
    let secrets = || RouteTls::Secrets { cert: "shop-cert".into(), key: "shop-key".into() };
    assert_eq!(
        stack.routes,
        [
            route("shop.example.com", secrets(), true, Some(30_000)),
            route("www.example.org", RouteTls::Auto, false, None),
            route("*.dev.example.com", secrets(), false, Some(90_000)),
            route("plain.example.org", RouteTls::None, false, None),
        ]
    );
    assert_eq!(
        stack.zones,
        [
            ZoneSpec {
                name: "example.com".into(),
                ttl: 60,
                records: vec![
                    record("@", RecordType::A, "192.0.2.1", None),
                    record("@", RecordType::Aaaa, "2001:db8::1", None),
                    record("@", RecordType::Mx, "10 mail.example.net.", None),
                    record("@", RecordType::Txt, "v=spf1 mx -all", None),
                    record("@", RecordType::Caa, "0 issue \"letsencrypt.org\"", None),
                    record("blog", RecordType::Cname, "blogs.example.net.", Some(300)),
                    record("_sip._tcp", RecordType::Srv, "10 5 5060 sip.example.net.", None),
                    record("*.static", RecordType::A, "192.0.2.7", Some(3_600)),
                ],
            },
            ZoneSpec {
                name: "example.org".into(),
                ttl: DEFAULT_ZONE_TTL,
                records: vec![
                    record("mail", RecordType::A, "192.0.2.25", None),
                    record("@", RecordType::Caa, "0 iodef \"mailto:security@example.org\"", None),
                ],
            },
        ]
    );
}

#[test]
fn wire_form_round_trips() {
    let stack = check_ok(FULL);
    let v = serde_json::to_value(&stack).unwrap();
    assert_eq!(v["routes"][0]["tls"], serde_json::json!({ "secrets": { "cert": "shop-cert", "key": "shop-key" } }));
    assert_eq!(v["routes"][0]["https_redirect"], true);
    assert_eq!(v["routes"][0]["timeout_ms"], 30_000);
    assert_eq!(v["routes"][1]["tls"], "auto");
    // Defaults are left out, so nodes that predate them read what this version writes.
    assert_eq!(
        v["routes"][3],
        serde_json::json!({ "host": "plain.example.org", "path": "/", "service": "web", "port": "http" })
    );
    assert_eq!(v["zones"][0]["records"][1], serde_json::json!({ "name": "@", "type": "AAAA", "value": "2001:db8::1" }));
    let back: Stack = serde_json::from_value(v).unwrap();
    assert_eq!(back, stack);
    assert_eq!(back.validate(), Ok(()));
    // A stack without any of it (written before it existed) still loads.
    let old = r#"{"project":"p","services":{},"routes":[{"host":"a.b","path":"/","service":"s","port":"http"}]}"#;
    let old: Stack = serde_json::from_str(old).unwrap();
    assert_eq!(old.routes[0].tls, RouteTls::None);
    assert!(old.zones.is_empty());
}

#[test]
fn validate_checks_a_stack_from_the_api() {
    let mut stack = check_ok(FULL);
    stack.zones[0].records[5].value = "Blogs.example.net".into();
    stack.zones[0].records[0].value = "192.0.2.256".into();
    stack.routes[1].timeout_ms = Some(0);
    stack.routes[3].https_redirect = true;
    let errors: Vec<String> = stack.validate().unwrap_err().iter().map(|e| e.to_string()).collect();
    assert_eq!(
        errors,
        [
            "routes[1].timeout: timeout must be between 1ms and 1h, found 0s",
            "routes[3].https_redirect: redirecting to HTTPS needs a certificate: add `tls: auto` or `tls: { cert: <secret>, key: <secret> }` to this route, or remove `https_redirect`",
            "dns.zones[0].records[0].value: an A record needs an IPv4 address, e.g. `192.0.2.1`, found `192.0.2.256`",
            "dns.zones[0].records[5].value: record value `Blogs.example.net` is not in canonical form; write `blogs.example.net.`",
        ]
    );
}

#[test]
fn zones_of_several_files_are_concatenated_with_their_own_indices() {
    let a = dedent(
        "
        dns:
          zones:
            - name: example.com
              records:
                - { name: www, type: A, value: 192.0.2.1 }
        ",
    );
    let b = dedent(
        "
        routes: []
        ---
        dns:
          zones:
            - name: example.org
            - name: example.com
              records:
                - { name: mail, type: MX, value: 10 }
        ",
    );
    let errors: Vec<String> = match parse_sources(&[("a.yaml", a.as_str()), ("b.yaml", b.as_str())]) {
        Ok(stack) => panic!("expected errors, got {stack:#?}"),
        Err(e) => e.errors().iter().map(|e| e.to_string()).collect(),
    };
    assert_eq!(
        errors,
        [
            "b.yaml:6:13: dns.zones[1].name: zone `example.com` is declared twice (first at dns.zones[0] (a.yaml:3:7)); give all its records in one zone",
            "b.yaml:8:42: dns.zones[1].records[0].value: an MX record needs `<preference> <mail server>`, e.g. `10 mail.example.net`, found `10`",
        ]
    );
    let ok = dedent("dns:\n  zones:\n    - name: example.net\n");
    let stack = parse_sources(&[("a.yaml", a.as_str()), ("c.yaml", ok.as_str())]).unwrap();
    let names: Vec<&str> = stack.zones.iter().map(|z| z.name.as_str()).collect();
    assert_eq!(names, ["example.com", "example.net"]);
}

/// A stack with secrets `shop-cert` and `shop-key`, a service `web`, then `routes:` items.
fn routes(items: &str) -> String {
    format!("secrets:\n  shop-cert: {{}}\n  shop-key: {{}}\nservices:\n  web: {{ run: [x], ports: {{ http: 80 }} }}\nroutes:\n{items}")
}

/// A zone `example.com`, then its `records:` items.
fn records(items: &str) -> String {
    format!("dns:\n  zones:\n    - name: example.com\n      records:\n{items}")
}

macro_rules! exact {
    ($($name:ident: $yaml:expr => [$($expected:expr),* $(,)?];)*) => {
        $( #[test] fn $name() { check_errs_exactly(&$yaml, &[$($expected),*]) } )*
    };
}

exact! {
    tls_true: routes("  - { host: a.example.com, service: web, tls: true }\n")
        => ["demo.yaml:7:47: routes[0].tls: expected `auto` or `{ cert: <secret>, key: <secret> }`, found boolean `true` (valid: `auto` = a certificate the cluster obtains and renews with ACME, or `{ cert: <secret>, key: <secret> }` = a PEM certificate chain and its private key from two secrets declared under `secrets:`)"];
    tls_manual: routes("  - { host: a.example.com, service: web, tls: manual }\n")
        => ["demo.yaml:7:47: routes[0].tls: invalid tls `manual` (valid: `auto` = a certificate the cluster obtains and renews with ACME, or `{ cert: <secret>, key: <secret> }` = a PEM certificate chain and its private key from two secrets declared under `secrets:`)"];
    tls_capitalised: routes("  - { host: a.example.com, service: web, tls: Auto }\n")
        => ["demo.yaml:7:47: routes[0].tls: invalid tls `Auto`, did you mean `auto`? (valid: `auto` = a certificate the cluster obtains and renews with ACME, or `{ cert: <secret>, key: <secret> }` = a PEM certificate chain and its private key from two secrets declared under `secrets:`)"];
    tls_without_key: routes("  - { host: a.example.com, service: web, tls: { cert: shop-cert } }\n")
        => ["demo.yaml:7:47: routes[0].tls: missing required field `key`: the secret holding its private key, e.g. `tls: { cert: shop-cert, key: shop-key }`"];
    tls_unknown_field: routes("  - { host: a.example.com, service: web, tls: { certificate: shop-cert, key: shop-key } }\n")
        => ["demo.yaml:7:47: routes[0].tls: missing required field `cert`: the secret holding the PEM certificate chain, e.g. `tls: { cert: shop-cert, key: shop-key }`",
            "demo.yaml:7:49: routes[0].tls: unknown field `certificate`, did you mean `cert`? (valid fields: cert, key)"];
    tls_secret_ref_form: routes("  - { host: a.example.com, service: web, tls: { cert: { secret: shop-cert }, key: shop-key } }\n")
        => ["demo.yaml:7:55: routes[0].tls.cert: expected the name of a secret declared under `secrets:`, found a mapping"];
    tls_undeclared_secret: routes("  - { host: a.example.com, service: web, tls: { cert: shop-cert, key: shop-keys } }\n")
        => ["demo.yaml:7:71: routes[0].tls.key: secret `shop-keys` is not declared in project `default`, did you mean `shop-key`? (declared: shop-cert, shop-key)"];
    tls_no_secrets_section: "services:\n  web: { run: [x], ports: { http: 80 } }\nroutes:\n  - { host: a.example.com, service: web, tls: { cert: crt, key: key } }\n"
        => ["demo.yaml:4:55: routes[0].tls.cert: secret `crt` is not declared: add `secrets: { crt: {} }` at the top level of project `default`, then set its value with `holdfast secret set default/crt`",
            "demo.yaml:4:65: routes[0].tls.key: secret `key` is not declared: add `secrets: { key: {} }` at the top level of project `default`, then set its value with `holdfast secret set default/key`"];
    redirect_without_tls: routes("  - { host: a.example.com, service: web, https_redirect: true }\n")
        => ["demo.yaml:7:58: routes[0].https_redirect: redirecting to HTTPS needs a certificate: add `tls: auto` or `tls: { cert: <secret>, key: <secret> }` to this route, or remove `https_redirect`"];
    redirect_not_a_boolean: routes("  - { host: a.example.com, service: web, tls: auto, https_redirect: yes }\n")
        => ["demo.yaml:7:69: routes[0].https_redirect: expected `true` or `false`, found string `yes`"];
    auto_on_a_wildcard: routes("  - { host: \"*.example.com\", service: web, tls: auto }\n")
        => ["demo.yaml:7:49: routes[0].tls: `tls: auto` cannot serve wildcard host `*.example.com`: ACME HTTP-01 cannot issue wildcard names; give a certificate and key from the project's secrets instead, `tls: { cert: <secret>, key: <secret> }`"];
    zero_timeout: routes("  - { host: a.example.com, service: web, timeout: 0s }\n")
        => ["demo.yaml:7:51: routes[0].timeout: timeout must be between 1ms and 1h, found 0s"];
    long_timeout: routes("  - { host: a.example.com, service: web, timeout: 1h1s }\n")
        => ["demo.yaml:7:51: routes[0].timeout: timeout must be between 1ms and 1h, found 1h1s"];
    bad_timeout: routes("  - { host: a.example.com, service: web, timeout: soon }\n")
        => ["demo.yaml:7:51: routes[0].timeout: invalid duration `soon`: use a number with a unit ms, s, m or h, e.g. `500ms`, `2s`, `1m30s` (a bare number means seconds)"];

    zones_at_top_level: "zones:\n  - name: example.com\n"
        => ["demo.yaml:1:1: unknown field `zones`: `zones` belongs in `dns`, as `dns: { zones: [...] }` (valid fields: project, services, routes, databases, secrets, jobs, dns)"];
    dns_fields: "dns:\n  name: example.com\n  zone: []\n"
        => ["demo.yaml:2:3: dns: unknown field `name`: `name` belongs in a zone, in the `dns.zones:` list (valid fields: zones)",
            "demo.yaml:3:3: dns: unknown field `zone`, did you mean `zones`? (valid fields: zones)"];
    dns_a_list: "dns: [example.com]\n"
        => ["demo.yaml:1:6: dns: expected a mapping with fields zones, found a list"];
    zones_not_a_list: "dns:\n  zones: example.com\n"
        => ["demo.yaml:2:10: dns.zones: expected a list of zones, each item starting with `- name: example.com`, found string `example.com`"];
    empty_zones: "dns:\n  zones:\n    -\n    - ttl: 5\n"
        => ["demo.yaml:3:6: dns.zones[0]: empty zone: each zone needs at least `name`, e.g. `- name: example.com`",
            "demo.yaml:4:7: dns.zones[1]: missing required field `name`: the zone's domain name, e.g. `name: example.com`"];
    record_field_in_a_zone: "dns:\n  zones:\n    - name: example.com\n      type: A\n"
        => ["demo.yaml:4:7: dns.zones[0]: unknown field `type`: `type` belongs in a record, in the zone's `records:` list (valid fields: name, ttl, records)"];
    zone_names: "dns:\n  zones:\n    - name: example.com\n    - name: shop.example.com\n    - name: Example.com\n    - name: \"*.example.net\"\n    - name: ex_ample.org\n"
        => ["demo.yaml:4:13: dns.zones[1].name: zone `shop.example.com` is inside zone `example.com` (dns.zones[0] (demo.yaml:3:7)); put its records in `example.com` instead, with names relative to it such as `www.shop`",
            "demo.yaml:5:13: dns.zones[2].name: zone `example.com` is declared twice (first at dns.zones[0] (demo.yaml:3:7)); give all its records in one zone",
            "demo.yaml:6:13: dns.zones[3].name: a zone name cannot be a wildcard: name the zone `example.net` and give it a record named `*`",
            "demo.yaml:7:13: dns.zones[4].name: invalid zone name `ex_ample.org`; a zone name is dot-separated labels of lowercase letters, digits and '-' (e.g. `example.com`)"];
    ttls: "dns:\n  zones:\n    - name: example.com\n      ttl: 0\n      records:\n        - { name: a, type: A, value: 192.0.2.1, ttl: 1500ms }\n        - { name: b, type: A, value: 192.0.2.1, ttl: 2d }\n        - { name: c, type: A, value: 192.0.2.1, ttl: 86401 }\n        - { name: d, type: A, value: 192.0.2.1, ttl: -1 }\n        - { name: e, type: A, value: 192.0.2.1, ttl: 1.5 }\n        - { name: f, type: A, value: 192.0.2.1, ttl: 25h }\n"
        => ["demo.yaml:4:12: dns.zones[0].ttl: ttl must be between 1 and 86400 seconds (1 day), found 0",
            "demo.yaml:6:54: dns.zones[0].records[0].ttl: ttl `1500ms` is not a whole number of seconds (DNS counts TTLs in seconds), e.g. `15` or `15s`",
            "demo.yaml:7:54: dns.zones[0].records[1].ttl: invalid duration `2d`: use a number with a unit ms, s, m or h, e.g. `500ms`, `2s`, `1m30s` (a bare number means seconds)",
            "demo.yaml:8:54: dns.zones[0].records[2].ttl: ttl must be between 1 and 86400 seconds (1 day), found 86401",
            "demo.yaml:9:54: dns.zones[0].records[3].ttl: ttl must be between 1 and 86400 seconds (1 day), found -1",
            "demo.yaml:10:54: dns.zones[0].records[4].ttl: expected a TTL in seconds, such as `300`, or a duration such as `5m`, found number `1.5`",
            "demo.yaml:11:54: dns.zones[0].records[5].ttl: ttl must be between 1 and 86400 seconds (1 day), found 90000"];
    unquoted_apex: records("        - name: @\n          type: A\n          value: 192.0.2.1\n")
        => ["demo.yaml:5:17: invalid YAML: unexpected character: `@' (YAML does not let a plain value start with `@`: quote it, e.g. `name: \"@\"` for a zone's apex)"];
    empty_and_incomplete_records: records("        -\n        - { type: A }\n")
        => ["demo.yaml:5:10: dns.zones[0].records[0]: empty record: each record needs `name`, `type` and `value`, e.g. `- { name: www, type: A, value: 192.0.2.1 }`",
            "demo.yaml:6:11: dns.zones[0].records[1]: missing required field `name`: the record's name relative to the zone, e.g. `name: www`, or `name: \"@\"` for the zone's apex",
            "demo.yaml:6:11: dns.zones[0].records[1]: missing required field `value`: the record's data, e.g. `- { name: www, type: A, value: 192.0.2.1 }`"];
    missing_type: records("        - { name: www, value: 192.0.2.1 }\n")
        => ["demo.yaml:5:11: dns.zones[0].records[0]: missing required field `type`: one of A, AAAA, CNAME, MX, TXT, SRV, CAA, e.g. `type: A`"];
    unknown_type: records("        - { name: www, type: AAA, value: \"2001:db8::1\" }\n")
        => ["demo.yaml:5:30: dns.zones[0].records[0].type: unknown record type `AAA`, did you mean `AAAA`? (valid: A, AAAA, CNAME, MX, TXT, SRV, CAA)"];
    ns_records_are_holdfasts: records("        - { name: www, type: NS, value: ns1.example.net }\n")
        => ["demo.yaml:5:30: dns.zones[0].records[0].type: unknown record type `NS`: holdfast makes the zone's SOA and NS records itself, naming the edge nodes (valid: A, AAAA, CNAME, MX, TXT, SRV, CAA)"];
    value_of_a_wrong_yaml_type: records("        - { name: www, type: TXT, value: true }\n        - { name: w2, type: TXT, value: [a] }\n")
        => ["demo.yaml:5:42: dns.zones[0].records[0].value: expected the record's data as a string or a number, such as `192.0.2.1` or `10 mail.example.net`, found boolean `true`",
            "demo.yaml:6:41: dns.zones[0].records[1].value: expected the record's data as a string or a number, such as `192.0.2.1` or `10 mail.example.net`, found a list"];
    name_as_an_a_value: records("        - { name: www, type: A, value: mail.example.net }\n")
        => ["demo.yaml:5:40: dns.zones[0].records[0].value: an A record needs an IPv4 address, e.g. `192.0.2.1`, found `mail.example.net`: that is a name; for an alias of another name use type CNAME"];
    ipv4_as_an_aaaa_value: records("        - { name: www, type: AAAA, value: 192.0.2.1 }\n")
        => ["demo.yaml:5:43: dns.zones[0].records[0].value: an AAAA record needs an IPv6 address, e.g. `2001:db8::1`, found `192.0.2.1`: that is an IPv4 address, use type A"];
    mx_without_host: records("        - { name: \"@\", type: MX, value: 10 }\n")
        => ["demo.yaml:5:41: dns.zones[0].records[0].value: an MX record needs `<preference> <mail server>`, e.g. `10 mail.example.net`, found `10`"];
    cname_to_a_single_label: records("        - { name: www, type: CNAME, value: shop }\n")
        => ["demo.yaml:5:44: dns.zones[0].records[0].value: a CNAME record needs the name it is an alias of, e.g. `shop.example.net`, found `shop`: `shop` is a single label: give the full name, e.g. `shop.example.com`"];
    srv_fields: records("        - { name: _sip._tcp, type: SRV, value: 10 5 sip.example.net }\n")
        => ["demo.yaml:5:48: dns.zones[0].records[0].value: an SRV record needs `<priority> <weight> <port> <target>`, e.g. `10 5 5060 sip.example.net` (numbers 0-65535; target `.` for none), found `10 5 sip.example.net`"];
    caa_tag: records("        - { name: \"@\", type: CAA, value: 0 issues letsencrypt.org }\n")
        => ["demo.yaml:5:42: dns.zones[0].records[0].value: a CAA record needs `<flags> <tag> <value>` with tag issue, issuewild or iodef, e.g. `0 issue \"letsencrypt.org\"`, found `0 issues letsencrypt.org`: unknown tag `issues`, did you mean `issue`?"];
    txt_not_ascii: records("        - { name: \"@\", type: TXT, value: \"caf\u{e9}\" }\n")
        => ["demo.yaml:5:42: dns.zones[0].records[0].value: a TXT record holds up to 4000 bytes of printable ASCII text and spaces, e.g. `v=spf1 mx -all`, found `caf\u{e9}`: `\u{e9}` is not printable ASCII"];
    absolute_record_names: records("        - { name: www.example.com., type: A, value: 192.0.2.1 }\n        - { name: www.example.com, type: A, value: 192.0.2.1 }\n        - { name: example.com, type: A, value: 192.0.2.1 }\n")
        => ["demo.yaml:5:19: dns.zones[0].records[0].name: record name `www.example.com.` ends with `.`, but record names are relative to zone `example.com`: write `www`",
            "demo.yaml:6:19: dns.zones[0].records[1].name: record name `www.example.com` repeats the zone's name: record names are relative to zone `example.com`, so write `www`",
            "demo.yaml:7:19: dns.zones[0].records[2].name: record name `example.com` is the zone's own name: write `\"@\"` for the apex (record names are relative to zone `example.com`)"];
    bad_record_names: records("        - { name: \"a.*\", type: A, value: 192.0.2.1 }\n        - { name: \"a b\", type: A, value: 192.0.2.1 }\n        - { name: a..b, type: A, value: 192.0.2.1 }\n")
        => ["demo.yaml:5:19: dns.zones[0].records[0].name: invalid record name `a.*`: a wildcard `*` is only allowed as the whole first label, as in `*` or `*.dev`; write `\"@\"` for the zone's apex, or a name relative to the zone such as `www`, `_sip._tcp` or `*.dev`",
            "demo.yaml:6:19: dns.zones[0].records[1].name: invalid record name `a b`: each label is lowercase letters, digits, '-' and '_'; write `\"@\"` for the zone's apex, or a name relative to the zone such as `www`, `_sip._tcp` or `*.dev`",
            "demo.yaml:7:19: dns.zones[0].records[2].name: invalid record name `a..b`: it has an empty label; write `\"@\"` for the zone's apex, or a name relative to the zone such as `www`, `_sip._tcp` or `*.dev`"];
    cname_at_the_apex: records("        - { name: \"@\", type: CNAME, value: shop.example.net }\n")
        => ["demo.yaml:5:30: dns.zones[0].records[0].type: a CNAME cannot be at the zone's apex `@` (the apex has the zone's own SOA and NS records, and a CNAME must be alone at its name); give the apex A or AAAA records, or put the CNAME on a name such as `www`"];
    cname_beside_other_records: records("        - { name: www, type: A, value: 192.0.2.1 }\n        - { name: www, type: CNAME, value: shop.example.net }\n        - { name: www, type: TXT, value: hi }\n        - { name: Www, type: CNAME, value: other.example.net }\n")
        => ["demo.yaml:6:19: dns.zones[0].records[1].name: a CNAME must be the only record at its name, but `www` already has an A record (dns.zones[0].records[0] (demo.yaml:5:11)); remove one, or use another name",
            "demo.yaml:7:19: dns.zones[0].records[2].name: `www` has a CNAME record (dns.zones[0].records[1] (demo.yaml:6:11)), which must be the only record at its name; remove one, or use another name",
            "demo.yaml:8:19: dns.zones[0].records[3].name: a CNAME must be the only record at its name, but `www` already has an A record (dns.zones[0].records[0] (demo.yaml:5:11)); remove one, or use another name"];
    addresses_of_routed_hosts: routes("  - { host: shop.example.com, service: web }\n  - { host: \"*.dev.example.com\", service: web }\ndns:\n  zones:\n    - name: example.com\n      records:\n        - { name: shop, type: A, value: 192.0.2.1 }\n        - { name: shop, type: MX, value: 10 mx.example.net }\n        - { name: a.b.dev, type: CNAME, value: x.example.net }\n        - { name: \"*.dev\", type: AAAA, value: \"2001:db8::1\" }\n        - { name: dev, type: A, value: 192.0.2.1 }\n")
        => ["demo.yaml:13:19: dns.zones[0].records[0].name: `shop.example.com` is routed by routes[0] (demo.yaml:7:5): its addresses are the edge nodes', which holdfast gives itself; remove this A record",
            "demo.yaml:15:19: dns.zones[0].records[2].name: `a.b.dev.example.com` is routed by routes[1] (demo.yaml:8:5): its addresses are the edge nodes', which holdfast gives itself; remove this CNAME record",
            "demo.yaml:16:19: dns.zones[0].records[3].name: `*.dev.example.com` is routed by routes[1] (demo.yaml:8:5): its addresses are the edge nodes', which holdfast gives itself; remove this AAAA record"];
}
