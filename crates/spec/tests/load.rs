//! Valid specs: the full example, defaults, shell vs argv, scalar
//! stringification, YAML anchors, multi-file and multi-document merging,
//! `load_files`, JSON round-trips and `Stack::validate`.

mod common;
use common::{check_ok, dedent};

use std::collections::BTreeMap;
use std::path::PathBuf;

use holdfast_spec::{
    load_files, parse_sources, HealthCheck, HealthSpec, PlacementSpec, Resources, RestartPolicy, RouteSpec, RouteTls,
    RunCommand, ServiceSpec, SpecErrorKind, Spread, Stack, StopSignal, StopSpec,
};

const FULL: &str = r#"
project: demo                 # optional
services:
  web:
    run: ["holdfast-demo-web", "--greeting", "hi"]
    replicas: 3
    workdir: /srv/web
    env: { GREETING: hello, VERSION: 1.10, DEBUG: true, COUNT: 7 }
    ports:
      http: 8080
      admin: 9090
    health:
      http: /healthz
      interval: 2s
      timeout: 1s
      healthy_threshold: 1
      unhealthy_threshold: 3
      start_grace: 5s
    resources:
      cpu: 0.5
      memory: 256Mi
    restart: always
    stop:
      signal: SIGTERM
      grace: 10s
  db:
    run: "postgres -D /var/lib/pg"
    ports: { pg: 5432 }
    health:
      tcp: pg
      interval: 1m30s
    restart: on-failure
    stop: { signal: int, grace: 1m }
    resources: { cpu: 2, memory: 1G }
    placement:
      node_selector: { arch: arm64, disk: ssd, gpu: true, version: 1.10 }
      spread: sites
      anti_affinity: [web]
routes:
  - host: demo.localhost
    path: /
    service: web
    port: http
  - host: "*.Demo.Localhost."
    path: /api
    service: web
    port: admin
"#;

fn full_expected() -> Stack {
    let mut web =
        ServiceSpec::new(RunCommand::Argv(vec!["holdfast-demo-web".into(), "--greeting".into(), "hi".into()]));
    web.replicas = 3;
    web.workdir = Some(PathBuf::from("/srv/web"));
    web.env = BTreeMap::from([
        ("GREETING".into(), "hello".into()),
        ("VERSION".into(), "1.10".into()),
        ("DEBUG".into(), "true".into()),
        ("COUNT".into(), "7".into()),
    ]);
    web.ports = BTreeMap::from([("http".into(), 8080), ("admin".into(), 9090)]);
    web.health = Some(HealthSpec {
        check: HealthCheck::Http { port: "http".into(), path: "/healthz".into() },
        interval_ms: 2_000,
        timeout_ms: 1_000,
        healthy_threshold: 1,
        unhealthy_threshold: 3,
        start_grace_ms: 5_000,
    });
    web.resources = Resources { cpu_millis: Some(500), memory_bytes: Some(256 * 1024 * 1024) };
    let mut db = ServiceSpec::new(RunCommand::Shell("postgres -D /var/lib/pg".into()));
    db.ports = BTreeMap::from([("pg".into(), 5432)]);
    db.health = Some(HealthSpec { interval_ms: 90_000, ..HealthSpec::new(HealthCheck::Tcp { port: "pg".into() }) });
    db.restart = RestartPolicy::OnFailure;
    db.stop = StopSpec { signal: StopSignal::Int, grace_ms: 60_000 };
    db.resources = Resources { cpu_millis: Some(2_000), memory_bytes: Some(1_000_000_000) };
    db.placement = PlacementSpec {
        node_selector: BTreeMap::from([
            ("arch".into(), "arm64".into()),
            ("disk".into(), "ssd".into()),
            ("gpu".into(), "true".into()),
            ("version".into(), "1.10".into()),
        ]),
        spread: Spread::Sites,
        anti_affinity: vec!["web".into()],
    };
    Stack {
        project: "demo".into(),
        secrets: BTreeMap::new(),
        jobs: BTreeMap::new(),
        services: BTreeMap::from([("web".into(), web), ("db".into(), db)]),
        routes: vec![
            RouteSpec {
                host: "demo.localhost".into(),
                path: "/".into(),
                service: "web".into(),
                port: "http".into(),
                tls: RouteTls::None,
                https_redirect: false,
                timeout_ms: None,
            },
            RouteSpec {
                host: "*.demo.localhost".into(),
                path: "/api".into(),
                service: "web".into(),
                port: "admin".into(),
                tls: RouteTls::None,
                https_redirect: false,
                timeout_ms: None,
            },
        ],
        databases: BTreeMap::new(),
        zones: Vec::new(),
    }
}

#[test]
fn full_example_parses_to_the_canonical_model() {
    assert_eq!(check_ok(FULL), full_expected());
}

#[test]
fn canonical_model_round_trips_through_json() -> Result<(), serde_json::Error> {
    let stack = check_ok(FULL);
    let json = serde_json::to_string(&stack)?;
    let back: Stack = serde_json::from_str(&json)?;
    assert_eq!(back, stack);
    // Stable, plain encodings.
    let v = serde_json::to_value(&stack)?;
    assert_eq!(v["services"]["db"]["restart"], "on-failure");
    assert_eq!(v["services"]["db"]["stop"]["signal"], "SIGINT");
    assert_eq!(v["services"]["db"]["stop"]["grace_ms"], 60_000);
    assert_eq!(v["services"]["web"]["resources"]["cpu_millis"], 500);
    assert_eq!(v["services"]["web"]["run"]["argv"][0], "holdfast-demo-web");
    assert_eq!(v["services"]["db"]["run"]["shell"], "postgres -D /var/lib/pg");
    assert_eq!(v["services"]["db"]["health"]["check"]["tcp"]["port"], "pg");
    assert_eq!(v["services"]["db"]["placement"]["node_selector"]["gpu"], "true");
    assert_eq!(v["services"]["db"]["placement"]["spread"], "sites");
    assert_eq!(v["services"]["db"]["placement"]["anti_affinity"][0], "web");
    // A service without placement rules is encoded as before they existed.
    assert!(v["services"]["web"].get("placement").is_none(), "{}", v["services"]["web"]);
    Ok(())
}

#[test]
fn services_stored_before_placement_existed_still_load() -> Result<(), serde_json::Error> {
    // JSON of a ServiceSpec as written by holdfast before `placement` (Raft log, redb).
    let old = r#"{"run":{"argv":["srv"]},"env":{},"workdir":null,"replicas":2,"ports":{},"health":null,
        "resources":{"cpu_millis":null,"memory_bytes":null},"restart":"always","stop":{"signal":"SIGTERM","grace_ms":10000}}"#;
    let svc: ServiceSpec = serde_json::from_str(old)?;
    assert_eq!(svc.placement, PlacementSpec::default());
    assert_eq!(svc.placement.spread, Spread::Nodes);
    // and a partial placement object fills the rest with defaults
    let partial: PlacementSpec = serde_json::from_str(r#"{"spread":"sites"}"#)?;
    assert_eq!(partial, PlacementSpec { spread: Spread::Sites, ..PlacementSpec::default() });
    Ok(())
}

#[test]
fn placement_defaults_and_empty_blocks() {
    let stack = check_ok(
        "
        services:
          a: { run: x }
          b: { run: x, placement: }
          c: { run: x, placement: { node_selector: {}, anti_affinity: [] } }
          d: { run: x, placement: { spread: nodes } }
        ",
    );
    for name in ["a", "b", "c", "d"] {
        assert!(stack.services[name].placement.is_default(), "{name}");
    }
}

#[test]
fn defaults_fill_a_minimal_spec() {
    let stack = check_ok("services:\n  web:\n    run: srv\n");
    assert_eq!(stack.project, "default");
    assert_eq!(stack.services["web"], ServiceSpec::new(RunCommand::Shell("srv".into())));
    let svc = &stack.services["web"];
    assert_eq!(svc.replicas, 1);
    assert_eq!(svc.restart, RestartPolicy::Always);
    assert_eq!(svc.stop.signal, StopSignal::Term);
    assert_eq!(svc.stop.grace_ms, 10_000);
    assert!(stack.routes.is_empty());
}

#[test]
fn empty_specs_are_empty_stacks() {
    assert_eq!(check_ok(""), Stack::default());
    assert_eq!(check_ok("# nothing yet\n"), Stack::default());
    assert_eq!(check_ok("services:\nroutes:\n"), Stack::default());
    assert_eq!(parse_sources::<&str, &str>(&[]), Ok(Stack::default()));
}

#[test]
fn shell_and_argv_commands() {
    let stack = check_ok(
        "
        services:
          a: { run: \"python3 -m http.server $PORT\" }
          b: { run: [sleep, 10] }
          c:
            run: |
              echo hi
              exec sleep 1
        ",
    );
    let a = &stack.services["a"].run;
    assert_eq!(a, &RunCommand::Shell("python3 -m http.server $PORT".into()));
    assert_eq!(a.argv(), ["/bin/sh", "-c", "python3 -m http.server $PORT"]);
    let b = &stack.services["b"].run;
    assert_eq!(b.argv(), ["sleep", "10"]);
    assert_eq!(stack.services["c"].run, RunCommand::Shell("echo hi\nexec sleep 1\n".into()));
}

#[test]
fn health_check_forms() {
    let stack = check_ok(
        "
        services:
          a:
            run: x
            ports: { web: 80, admin: 81 }
            health: { http: /ready }
          b:
            run: x
            ports: { web: 80, admin: 81 }
            health: { http: { port: admin } }
          c:
            run: x
            ports: { web: 80 }
            health: { tcp: { port: web } }
          d:
            run: x
            health: { exec: \"test -f /tmp/ok\", interval: 10, timeout: 0.5 }
        ",
    );
    let check = |n: &str| stack.services[n].health.clone().map(|h| h.check);
    // The short form uses the first declared port, not the alphabetical first.
    assert_eq!(check("a"), Some(HealthCheck::Http { port: "web".into(), path: "/ready".into() }));
    assert_eq!(check("b"), Some(HealthCheck::Http { port: "admin".into(), path: "/".into() }));
    assert_eq!(check("c"), Some(HealthCheck::Tcp { port: "web".into() }));
    assert_eq!(check("d"), Some(HealthCheck::Exec { command: RunCommand::Shell("test -f /tmp/ok".into()) }));
    let d = stack.services["d"].health.clone().map(|h| (h.interval_ms, h.timeout_ms));
    assert_eq!(d, Some((10_000, 500)));
}

#[test]
fn route_port_may_be_left_out_for_a_single_port_service() {
    let stack = check_ok(
        "
        services:
          web: { run: x, ports: { http: 80 } }
        routes:
          - host: Demo.LOCALHOST
            service: web
        ",
    );
    assert_eq!(
        stack.routes,
        [RouteSpec {
            host: "demo.localhost".into(),
            path: "/".into(),
            service: "web".into(),
            port: "http".into(),
            tls: RouteTls::None,
            https_redirect: false,
            timeout_ms: None,
        }]
    );
}

#[test]
fn signals_are_case_insensitive_with_or_without_sig() {
    for (text, sig, number) in [
        ("SIGTERM", StopSignal::Term, 15),
        ("term", StopSignal::Term, 15),
        ("SIGINT", StopSignal::Int, 2),
        ("Quit", StopSignal::Quit, 3),
        ("sighup", StopSignal::Hup, 1),
        ("USR1", StopSignal::Usr1, 10),
        ("SIGUSR2", StopSignal::Usr2, 12),
        ("kill", StopSignal::Kill, 9),
    ] {
        let stack = check_ok(&format!("services:\n  w: {{ run: x, stop: {{ signal: {text} }} }}\n"));
        let got = stack.services["w"].stop.signal;
        assert_eq!(got, sig, "{text}");
        assert_eq!(got.number(), number, "{text}");
        assert_eq!(got.to_string(), sig.name());
    }
}

#[test]
fn anchors_merge_keys_and_extension_fields() {
    let stack = check_ok(
        "
        x-defaults: &defaults
          restart: never
          env: { MODE: prod }
        services:
          a:
            <<: *defaults
            run: a
          b:
            <<: *defaults
            run: b
            restart: on-failure
        ",
    );
    assert_eq!(stack.services["a"].restart, RestartPolicy::Never);
    assert_eq!(stack.services["b"].restart, RestartPolicy::OnFailure);
    assert_eq!(stack.services["b"].env["MODE"], "prod");
}

#[test]
fn yaml_scalars_are_kept_as_written_in_strings() {
    let stack = check_ok(
        "
        services:
          w:
            run: [app, 1.10, true, 0x1F, 007, null-ish]
            env: { A: 1.10, B: yes, C: '08', D: 1e3, E: .inf, F: 0o17, G: ~x }
        ",
    );
    assert_eq!(stack.services["w"].run.argv(), ["app", "1.10", "true", "0x1F", "007", "null-ish"]);
    let env = &stack.services["w"].env;
    assert_eq!(env["A"], "1.10");
    assert_eq!(env["B"], "yes");
    assert_eq!(env["C"], "08");
    assert_eq!(env["D"], "1e3");
    assert_eq!(env["E"], ".inf");
    assert_eq!(env["F"], "0o17");
    assert_eq!(env["G"], "~x");
}

#[test]
fn multi_file_merge() {
    let a = dedent(
        "
        project: demo
        services:
          web: { run: web, ports: { http: 80 } }
        routes:
          - { host: a.localhost, service: api }
        ",
    );
    let b = dedent(
        "
        services:
          api: { run: api, ports: { http: 81 } }
        routes:
          - { host: b.localhost, service: web }
        ",
    );
    let stack = parse_sources(&[("a.yaml", a.as_str()), ("b.yaml", b.as_str())]);
    let stack = stack.map_err(|e| e.to_string());
    let stack = match stack {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(stack.project, "demo");
    assert_eq!(stack.services.keys().collect::<Vec<_>>(), ["api", "web"]);
    let hosts: Vec<&str> = stack.routes.iter().map(|r| r.host.as_str()).collect();
    assert_eq!(hosts, ["a.localhost", "b.localhost"]);
}

fn merge_errors(sources: &[(&str, &str)]) -> Vec<String> {
    let owned: Vec<(String, String)> = sources.iter().map(|(n, t)| (n.to_string(), dedent(t))).collect();
    match parse_sources(&owned) {
        Ok(s) => panic!("expected errors, got {s:#?}"),
        Err(e) => e.errors().iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn service_defined_in_two_files_names_both() {
    let errs = merge_errors(&[
        ("a.yaml", "services:\n  web: { run: a }\n"),
        ("b.yaml", "services:\n  db: { run: d }\n  web: { run: 5 }\n"),
    ]);
    // The duplicate's own structural problems are reported too.
    assert_eq!(
        errs,
        [
            "b.yaml:3:3: services.web: service `web` is defined twice (first at a.yaml:2:3)",
            "b.yaml:3:15: services.web.run: expected a command: a list such as `[\"my-server\", \"--port\", \"8080\"]` or a shell string such as `\"python3 -m http.server $PORT\"`, found integer `5`",
        ]
    );
}

#[test]
fn route_defined_in_two_files_names_both() {
    let errs = merge_errors(&[
        ("a.yaml", "services:\n  web: { run: a, ports: { http: 80 } }\nroutes:\n  - { host: x.y, service: web }\n"),
        ("b.yaml", "routes:\n  - { host: z.y, service: web }\n  - { host: x.y, path: /, service: web }\n"),
    ]);
    assert_eq!(
        errs,
        ["b.yaml:3:5: routes[1]: duplicate route: host `x.y` path `/` is already routed by routes[0] (a.yaml:4:5)"]
    );
}

#[test]
fn conflicting_projects_name_both() {
    let errs = merge_errors(&[("a.yaml", "project: one\n"), ("b.yaml", "project: two\n")]);
    assert_eq!(
        errs,
        ["b.yaml:1:10: project: project `two` conflicts with project `one` set at a.yaml:1:10; all spec files must agree"]
    );
    // Agreeing files are fine.
    let ok = parse_sources(&[("a.yaml", "project: one\n"), ("b.yaml", "project: one\n")]);
    assert_eq!(ok.map(|s| s.project), Ok("one".to_string()));
}

#[test]
fn errors_in_several_files_are_all_reported_in_file_order() {
    let errs = merge_errors(&[
        ("a.yaml", "services:\n  web: { run: a, replicas: many }\n"),
        ("b.yaml", "routes:\n  - { host: x.y, service: wbe }\n"),
        ("c.yaml", "services: [\n"),
    ]);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(errs[0].starts_with("a.yaml:2:28: services.web.replicas: expected a whole number"));
    assert!(errs[1].starts_with("b.yaml:2:27: routes[0].service: route to unknown service `wbe`, did you mean `web`?"));
    assert!(errs[2].starts_with("c.yaml:"), "{}", errs[2]);
    assert!(errs[2].contains("invalid YAML"), "{}", errs[2]);
}

#[test]
fn several_documents_in_one_file() {
    let text = "services:\n  web: { run: a, ports: { http: 80 } }\n---\nroutes:\n  - { host: x.y, service: web }\n  - { host: z.y, service: nope }\n";
    let errs = merge_errors(&[("one.yaml", text)]);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].starts_with("one.yaml:6:27: routes[1].service: route to unknown service `nope`"));
}

#[test]
fn load_files_reads_and_reports_unreadable_files() -> std::io::Result<()> {
    let dir = std::env::temp_dir().join(format!("holdfast-spec-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let a = dir.join("a.yaml");
    let b = dir.join("b.yaml");
    std::fs::write(&a, "services:\n  web: { run: a, ports: { http: 80 } }\n")?;
    std::fs::write(&b, "routes:\n  - { host: x.y, service: web }\n")?;
    let stack = load_files(&[a.clone(), b.clone()]);
    assert_eq!(stack.as_ref().map(|s| s.routes.len()), Ok(1));

    let missing = dir.join("missing.yaml");
    let err = load_files(&[a.clone(), missing.clone()]).err();
    let errs = err.map(|e| e.0).unwrap_or_default();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].kind, SpecErrorKind::Io);
    assert_eq!(errs[0].file.as_deref(), Some(missing.display().to_string().as_str()));
    assert!(errs[0].to_string().contains("cannot read spec file"));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn the_readme_spec_reference_is_a_valid_spec() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).expect("README.md");
    let section = readme.split("## Spec reference").nth(1).expect("a spec reference section");
    let yaml = section.split("```yaml\n").nth(1).and_then(|s| s.split("```").next()).expect("a yaml block");
    let stack = match holdfast_spec::parse_str("README.md", yaml) {
        Ok(s) => s,
        Err(e) => panic!("the README's spec example is invalid:\n{e}"),
    };
    let web = &stack.services["web"];
    assert_eq!(web.placement.spread, Spread::Sites);
    assert_eq!(web.placement.node_selector["gpu"], "true");
    assert_eq!(web.placement.anti_affinity, ["worker"]);
    let db = &stack.databases["db"];
    assert_eq!((db.instances, db.sync), (3, 1));
    assert!(matches!(&web.env["DATABASE_URL"], holdfast_spec::EnvValue::Url { url, .. } if url == "db"));
}
