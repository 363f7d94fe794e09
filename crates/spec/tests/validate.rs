//! `Stack::validate` on hand-built stacks, as the server runs it on a
//! stack received over the API: every rule, errors naming field paths.

use std::collections::BTreeMap;

use holdfast_spec::{HealthCheck, HealthSpec, RouteSpec, RouteTls, RunCommand, ServiceSpec, SpecErrorKind, Stack};

fn valid() -> Stack {
    let mut web = ServiceSpec::new(RunCommand::Argv(vec!["srv".into()]));
    web.ports = BTreeMap::from([("http".into(), 8080)]);
    web.health = Some(HealthSpec::new(HealthCheck::Http { port: "http".into(), path: "/healthz".into() }));
    Stack {
        project: "demo".into(),
        secrets: BTreeMap::new(),
        jobs: BTreeMap::new(),
        services: BTreeMap::from([("web".into(), web)]),
        routes: vec![RouteSpec {
            host: "demo.localhost".into(),
            path: "/".into(),
            service: "web".into(),
            port: "http".into(),
            tls: RouteTls::None,
            https_redirect: false,
            timeout_ms: None,
        }],
        databases: BTreeMap::new(),
        zones: Vec::new(),
    }
}

fn messages(stack: &Stack) -> Vec<String> {
    match stack.validate() {
        Ok(()) => Vec::new(),
        Err(errs) => errs.iter().map(|e| e.to_string()).collect(),
    }
}

fn check(edit: impl FnOnce(&mut Stack), expected: &str) {
    let mut stack = valid();
    edit(&mut stack);
    let msgs = messages(&stack);
    assert!(msgs.iter().any(|m| m.contains(expected)), "expected {expected:?} in {msgs:#?}");
}

fn web(s: &mut Stack) -> &mut ServiceSpec {
    match s.services.get_mut("web") {
        Some(w) => w,
        None => panic!("no web"),
    }
}

fn health(s: &mut Stack) -> &mut HealthSpec {
    match web(s).health.as_mut() {
        Some(h) => h,
        None => panic!("no health"),
    }
}

#[test]
fn valid_stack_passes() {
    assert_eq!(valid().validate(), Ok(()));
    assert_eq!(Stack::default().validate(), Ok(()));
}

#[test]
fn errors_have_paths_but_no_positions() {
    let mut s = valid();
    s.project = "Bad Project".into();
    let errs = s.validate().err().unwrap_or_default();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].path, "project");
    assert_eq!(errs[0].file, None);
    assert_eq!(errs[0].pos, None);
    assert!(errs[0].to_string().starts_with("project: invalid project name `Bad Project`"));
}

#[test]
fn every_rule_is_rechecked() {
    check(|s| s.project = "x_y".into(), "project: invalid project name `x_y`");
    check(
        |s| {
            let w = s.services.remove("web");
            if let Some(w) = w {
                s.services.insert("Web".into(), w);
            }
            s.routes.clear();
        },
        "services.Web: invalid service name `Web`",
    );
    check(|s| web(s).run = RunCommand::Argv(vec![]), "services.web.run: the command list is empty");
    check(|s| web(s).run = RunCommand::Shell(" ".into()), "services.web.run: the shell command is empty");
    check(
        |s| web(s).run = RunCommand::Argv(vec!["a\0b".into()]),
        "services.web.run[0]: command arguments cannot contain a NUL character",
    );
    check(|s| web(s).replicas = 1001, "services.web.replicas: replicas must be between 0 and 1000, found 1001");
    check(|s| web(s).workdir = Some("rel".into()), "services.web.workdir: workdir `rel` must be an absolute path");
    check(
        |s| {
            web(s).env.insert("1X".into(), "v".into());
        },
        "services.web.env.1X: invalid environment variable name `1X`",
    );
    check(
        |s| {
            web(s).env.insert("PORT".into(), "1".into());
        },
        "services.web.env.PORT: `PORT` is set by holdfast",
    );
    check(
        |s| {
            web(s).ports.insert("http".into(), 0);
        },
        "services.web.ports.http: port must be between 1 and 65535, found 0",
    );
    check(
        |s| {
            web(s).ports.insert("other".into(), 8080);
        },
        "services.web.ports.other: port 8080 is already used by port `http`",
    );
    check(
        |s| {
            web(s).ports.insert("Other".into(), 1);
        },
        "services.web.ports.Other: invalid port name `Other`",
    );
    check(
        |s| {
            health(s).check = HealthCheck::Tcp { port: "nope".into() };
        },
        "services.web.health.tcp.port: port `nope` is not declared by service `web`",
    );
    check(
        |s| {
            health(s).check = HealthCheck::Http { port: "http".into(), path: "x".into() };
        },
        "services.web.health.http.path: health check path `x` must start with `/`",
    );
    check(
        |s| {
            health(s).check = HealthCheck::Exec { command: RunCommand::Argv(vec![]) };
        },
        "services.web.health.exec: the command list is empty",
    );
    check(|s| health(s).interval_ms = 0, "services.web.health.interval: interval must be greater than 0");
    check(|s| health(s).timeout_ms = 0, "services.web.health.timeout: timeout must be greater than 0");
    check(|s| health(s).timeout_ms = 5_000, "services.web.health.timeout: timeout 5s is longer than interval 2s");
    check(
        |s| health(s).healthy_threshold = 0,
        "services.web.health.healthy_threshold: healthy_threshold must be at least 1",
    );
    check(
        |s| health(s).unhealthy_threshold = 0,
        "services.web.health.unhealthy_threshold: unhealthy_threshold must be at least 1",
    );
    check(|s| web(s).resources.cpu_millis = Some(0), "services.web.resources.cpu: cpu must be greater than 0");
    check(|s| web(s).resources.memory_bytes = Some(0), "services.web.resources.memory: memory must be greater than 0");
    check(
        |s| s.routes[0].host = "Demo.localhost".into(),
        "routes[0].host: invalid host `Demo.localhost`: host names must be lowercase",
    );
    check(|s| s.routes[0].path = "api".into(), "routes[0].path: route path `api` must start with `/`");
    check(
        |s| s.routes[0].service = "wbe".into(),
        "routes[0].service: route to unknown service `wbe`, did you mean `web`? (services: web)",
    );
    check(|s| s.routes[0].port = "admin".into(), "routes[0].port: port `admin` is not declared by service `web`");
    check(|s| s.routes[0].port = String::new(), "routes[0].port: missing `port`");
    check(
        |s| {
            let r = s.routes[0].clone();
            s.routes.push(r);
        },
        "routes[1]: duplicate route: host `demo.localhost` path `/` is already routed by routes[0]",
    );
    check(
        |s| {
            web(s).placement.node_selector.insert("Gpu".into(), "true".into());
        },
        "services.web.placement.node_selector.Gpu: invalid label key `Gpu`",
    );
    check(
        |s| {
            web(s).placement.node_selector.insert("gpu".into(), "".into());
        },
        "services.web.placement.node_selector.gpu: invalid value `` for label `gpu`: it is empty",
    );
    check(
        |s| web(s).placement.anti_affinity = vec!["db".into()],
        "services.web.placement.anti_affinity[0]: anti_affinity names unknown service `db`: project `demo` has no other services",
    );
    check(
        |s| web(s).placement.anti_affinity = vec!["web".into()],
        "services.web.placement.anti_affinity[0]: service `web` cannot be anti-affine with itself",
    );
    check(
        |s| {
            let db = ServiceSpec::new(RunCommand::Argv(vec!["pg".into()]));
            s.services.insert("db".into(), db);
            web(s).placement.anti_affinity = vec!["db".into(), "db".into()];
        },
        "services.web.placement.anti_affinity[1]: `db` is listed twice (first at services.web.placement.anti_affinity[0]); remove one",
    );
}

#[test]
fn placement_rules_accept_a_valid_block() {
    let mut s = valid();
    s.services.insert("db".into(), ServiceSpec::new(RunCommand::Argv(vec!["pg".into()])));
    let w = web(&mut s);
    w.placement.node_selector.insert("arch".into(), "arm64".into());
    w.placement.node_selector.insert("name".into(), "pi-1".into());
    w.placement.spread = holdfast_spec::Spread::Sites;
    w.placement.anti_affinity = vec!["db".into()];
    assert_eq!(s.validate(), Ok(()));
}

#[test]
fn all_problems_are_reported_at_once() {
    let mut s = valid();
    s.project = String::new();
    web(&mut s).replicas = 5000;
    s.routes[0].service = "gone".into();
    let errs = s.validate().err().unwrap_or_default();
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["project", "services.web.replicas", "routes[0].service"]);
    assert_eq!(errs[2].kind, SpecErrorKind::UnknownReference);
}
