//! One-line diagnostic cases: each YAML spec must produce a diagnostic
//! containing the expected text (file:line:col: path: message).

mod common;
use common::{check_err, check_errs_exactly, errors};

/// `web` with one port, used by many cases.
const WEB: &str = "services:\n  web:\n    run: [srv]\n    ports: { http: 8080 }\n";

fn web(extra: &str) -> String {
    format!("{WEB}{extra}")
}

macro_rules! err_cases {
    ($($name:ident: $yaml:expr => $expected:expr;)*) => {
        $( #[test] fn $name() { check_err(&$yaml, $expected) } )*
    };
}

err_cases! {
    // --- structure, unknown and missing fields
    unknown_service_field_suggests: "services:\n  web:\n    run: [srv]\n    replica: 3\n"
        => "demo.yaml:4:5: services.web: unknown field `replica`, did you mean `replicas`? (valid fields: run, image, replicas, workdir, env, files, ports, health, resources, restart, stop, placement)";
    unknown_top_field_suggests: "service:\n  web: {run: x}\n"
        => "demo.yaml:1:1: unknown field `service`, did you mean `services`? (valid fields: project, services, routes, databases, secrets, jobs, dns)";
    misplaced_health_field_hint: "services:\n  web:\n    run: [srv]\n    interval: 3s\n"
        => "demo.yaml:4:5: services.web: unknown field `interval`: `interval` belongs in `health`";
    misplaced_service_field_at_top: "run: [srv]\n"
        => "demo.yaml:1:1: unknown field `run`: `run` belongs in a service, under `services.<name>`";
    unknown_health_field: &web("    health: { tcp: http, intreval: 2s }\n")
        => "demo.yaml:5:26: services.web.health: unknown field `intreval`, did you mean `interval`?";
    unknown_route_field: &web("routes:\n  - host: a.b\n    service: web\n    servce: web\n")
        => "demo.yaml:8:5: routes[0]: unknown field `servce`, did you mean `service`? (valid fields: host, path, service, port, tls, https_redirect, timeout)";
    missing_run: "services:\n  web:\n    replicas: 2\n"
        => "demo.yaml:2:3: services.web: missing required field `run`: the command to start";
    missing_route_host: &web("routes:\n  - service: web\n")
        => "demo.yaml:6:5: routes[0]: missing required field `host`, e.g. `host: demo.localhost`";
    missing_route_service: &web("routes:\n  - host: a.b\n")
        => "demo.yaml:6:5: routes[0]: missing required field `service`, e.g. `service: web`";
    field_given_twice: "services:\n  web:\n    run: [a]\n    run: [b]\n"
        => "demo.yaml:4:5: services.web.run: field `run` is given twice (first at demo.yaml:3:5); remove one";
    service_defined_twice_in_file: "services:\n  web: {run: a}\n  web: {run: b}\n"
        => "demo.yaml:3:3: services.web: service `web` is defined twice (first at demo.yaml:2:3)";
    service_as_string_hints_run: "services:\n  web: python3 app.py\n"
        => "demo.yaml:2:8: services.web: expected a mapping with fields run, image, replicas, workdir, env, files, ports, health, resources, restart, stop, placement, found string `python3 app.py`; to run a command write `web: { run: \"python3 app.py\" }`";
    services_as_list: "services:\n  - web\n"
        => "demo.yaml:2:3: services: expected a mapping of service names to services, e.g. `web: { run: ... }`, found a list";
    top_level_list: "- a\n- b\n"
        => "demo.yaml:1:1: expected a mapping with fields project, services, routes, databases, secrets, jobs, dns, found a list";
    routes_as_map: &web("routes:\n  host: a.b\n")
        => "demo.yaml:6:3: routes: expected a list of routes, each item starting with `- host: ...`, found a mapping";
    non_scalar_key: "services:\n  ? [a, b]\n  : {run: x}\n"
        => "services: expected a service name, found a list";

    // --- YAML syntax
    syntax_unclosed_bracket: "services:\n  web:\n    run: [srv, --x\n"
        => "demo.yaml:3:10: invalid YAML: unclosed bracket '['";
    syntax_bad_mapping: "services:\n  web: run: x\n"
        => "demo.yaml:2:11: invalid YAML: mapping values are not allowed in this context";
    syntax_unknown_alias: "services:\n  web: *nope\n"
        => "demo.yaml:2:8: invalid YAML:";

    // --- names
    project_name_invalid: "project: Demo_1\n"
        => "demo.yaml:1:10: project: invalid project name `Demo_1`: use 1-63 lowercase letters, digits and '-', starting with a letter and not ending with '-', e.g. `demo-1`";
    project_name_too_long: &format!("project: {}\n", "a".repeat(64))
        => "it is 64 characters long";
    service_name_invalid: "services:\n  Web:\n    run: [srv]\n"
        => "demo.yaml:2:3: services.Web: invalid service name `Web`: use 1-63 lowercase letters, digits and '-', starting with a letter and not ending with '-', e.g. `web`";
    service_name_starts_with_digit: "services:\n  1web: {run: [srv]}\n"
        => "demo.yaml:2:3: services.1web: invalid service name `1web`";
    port_name_invalid: "services:\n  web:\n    run: [srv]\n    ports: { HTTP: 80 }\n"
        => "demo.yaml:4:14: services.web.ports.HTTP: invalid port name `HTTP`";
    env_name_invalid: "services:\n  web:\n    run: [srv]\n    env: { MY-VAR: x }\n"
        => "demo.yaml:4:12: services.web.env.MY-VAR: invalid environment variable name `MY-VAR`: use letters, digits and '_', not starting with a digit, e.g. `MY_VAR`";

    // --- run
    run_wrong_type: "services:\n  web:\n    run: 5\n"
        => "demo.yaml:3:10: services.web.run: expected a command: a list such as `[\"my-server\", \"--port\", \"8080\"]` or a shell string such as `\"python3 -m http.server $PORT\"`, found integer `5`";
    run_empty_list: "services:\n  web:\n    run: []\n"
        => "demo.yaml:3:10: services.web.run: the command list is empty";
    run_empty_shell: "services:\n  web:\n    run: \"  \"\n"
        => "demo.yaml:3:10: services.web.run: the shell command is empty";
    run_empty_program: "services:\n  web:\n    run: [\"\", x]\n"
        => "demo.yaml:3:11: services.web.run[0]: the program (first item of the command) is empty";
    run_nested_list_item: "services:\n  web:\n    run: [a, [b]]\n"
        => "demo.yaml:3:14: services.web.run[1]: expected a string (one argument), found a list";
    run_null: "services:\n  web:\n    run:\n"
        => "services.web.run: expected a command";

    // --- replicas, workdir
    replicas_too_many: "services:\n  web:\n    run: [srv]\n    replicas: 1001\n"
        => "demo.yaml:4:15: services.web.replicas: replicas must be between 0 and 1000, found 1001";
    replicas_negative: "services:\n  web:\n    run: [srv]\n    replicas: -1\n"
        => "demo.yaml:4:15: services.web.replicas: replicas must be between 0 and 1000, found -1";
    replicas_string: "services:\n  web:\n    run: [srv]\n    replicas: three\n"
        => "demo.yaml:4:15: services.web.replicas: expected a whole number of instances between 0 and 1000, found string `three`";
    replicas_fraction: "services:\n  web:\n    run: [srv]\n    replicas: 1.5\n"
        => "found number `1.5`";
    workdir_relative: "services:\n  web:\n    run: [srv]\n    workdir: srv/web\n"
        => "demo.yaml:4:14: services.web.workdir: workdir `srv/web` must be an absolute path, e.g. `/srv/srv/web`";
    workdir_list: "services:\n  web:\n    run: [srv]\n    workdir: [a]\n"
        => "demo.yaml:4:14: services.web.workdir: expected an absolute directory path such as `/srv/web`, found a list";

    // --- env
    env_null_value: "services:\n  web:\n    run: [srv]\n    env:\n      EMPTY:\n"
        => "demo.yaml:5:7: services.web.env.EMPTY: environment variable `EMPTY` has no value; write `EMPTY: \"\"` for an empty string";
    env_list_value: "services:\n  web:\n    run: [srv]\n    env: { A: [1] }\n"
        => "demo.yaml:4:15: services.web.env.A: expected a string value, a database URL such as `{ url: db }`, or a secret such as `{ secret: oauth-key }`, found a list";
    env_not_a_map: "services:\n  web:\n    run: [srv]\n    env: [A=1]\n"
        => "demo.yaml:4:10: services.web.env: expected a mapping of variable names to values, e.g. `{ GREETING: hello }`, found a list";
    env_reserved_port: &web("    env: { PORT: '9000' }\n")
        => "demo.yaml:5:12: services.web.env.PORT: `PORT` is set by holdfast for each instance";
    env_reserved_named_port: &web("    env: { PORT_HTTP: '9000' }\n")
        => "services.web.env.PORT_HTTP: `PORT_HTTP` is set by holdfast";
    env_duplicate_key: "services:\n  web:\n    run: [srv]\n    env:\n      A: 1\n      A: 2\n"
        => "demo.yaml:6:7: services.web.env.A: environment variable `A` is defined twice (first at demo.yaml:5:7)";

    // --- ports
    port_zero: "services:\n  web:\n    run: [srv]\n    ports: { http: 0 }\n"
        => "demo.yaml:4:20: services.web.ports.http: port must be between 1 and 65535, found 0";
    port_too_big: "services:\n  web:\n    run: [srv]\n    ports: { http: 70000 }\n"
        => "demo.yaml:4:20: services.web.ports.http: port must be between 1 and 65535, found 70000";
    port_string: "services:\n  web:\n    run: [srv]\n    ports: { http: web }\n"
        => "demo.yaml:4:20: services.web.ports.http: expected a port number between 1 and 65535, found string `web`";
    port_number_duplicate: "services:\n  web:\n    run: [srv]\n    ports:\n      http: 8080\n      admin: 8080\n"
        => "demo.yaml:6:14: services.web.ports.admin: port 8080 is already used by port `http` of this service; each named port needs its own number";
    ports_as_list: "services:\n  web:\n    run: [srv]\n    ports: [8080]\n"
        => "demo.yaml:4:12: services.web.ports: expected a mapping of port names to numbers, e.g. `{ http: 8080 }`, found a list";

    // --- health
    health_needs_a_check: &web("    health:\n      interval: 2s\n")
        => "demo.yaml:5:5: services.web.health: a health check needs one of `http` (e.g. `http: /healthz`), `tcp` (e.g. `tcp: http`) or `exec`";
    health_two_checks: &web("    health:\n      http: /healthz\n      tcp: http\n")
        => "demo.yaml:7:7: services.web.health: a health check has exactly one of `http`, `tcp` or `exec`, but both `http` and `tcp` are given";
    health_http_without_ports: "services:\n  web:\n    run: [srv]\n    health: { http: /healthz }\n"
        => "demo.yaml:4:21: services.web.health.http: `http: /healthz` checks the service's first port, but service `web` declares no ports: add one under `ports:`";
    health_tcp_unknown_port: &web("    health: { tcp: htp }\n")
        => "demo.yaml:5:20: services.web.health.tcp.port: port `htp` is not declared by service `web`, did you mean `http`? (ports: http=8080)";
    health_tcp_port_by_number: &web("    health: { tcp: 8080 }\n")
        => "port `8080` is not declared by service `web`, did you mean `http`? (ports are referred to by name)";
    health_http_long_unknown_port: &web("    health:\n      http: { path: /healthz, port: admin }\n")
        => "demo.yaml:6:37: services.web.health.http.port: port `admin` is not declared by service `web` (ports: http=8080)";
    health_http_path_relative: &web("    health: { http: healthz }\n")
        => "demo.yaml:5:21: services.web.health.http.path: health check path `healthz` must start with `/`, e.g. `/healthz`";
    health_exec_empty: &web("    health: { exec: [] }\n")
        => "demo.yaml:5:21: services.web.health.exec: the command list is empty";
    health_interval_bad_unit: &web("    health: { tcp: http, interval: 2 sec }\n")
        => "demo.yaml:5:36: services.web.health.interval: invalid duration `2 sec`: use a number with a unit ms, s, m or h, e.g. `500ms`, `2s`, `1m30s` (a bare number means seconds)";
    health_timeout_over_interval: &web("    health:\n      tcp: http\n      interval: 1s\n      timeout: 1500ms\n")
        => "demo.yaml:8:16: services.web.health.timeout: timeout 1s500ms is longer than interval 1s: the timeout must be at most the interval";
    health_interval_zero: &web("    health: { tcp: http, interval: 0 }\n")
        => "services.web.health.interval: interval must be greater than 0";
    health_threshold_zero: &web("    health: { tcp: http, healthy_threshold: 0 }\n")
        => "demo.yaml:5:45: services.web.health.healthy_threshold: healthy_threshold must be at least 1, found 0";
    health_threshold_string: &web("    health: { tcp: http, unhealthy_threshold: many }\n")
        => "services.web.health.unhealthy_threshold: expected a whole number of at least 1, found string `many`";
    health_negative_duration: &web("    health: { tcp: http, start_grace: -5 }\n")
        => "services.web.health.start_grace: invalid duration `-5`: durations cannot be negative";
    health_not_a_map: &web("    health: /healthz\n")
        => "demo.yaml:5:13: services.web.health: expected a mapping with fields http, tcp, exec, interval, timeout, healthy_threshold, unhealthy_threshold, start_grace, found string `/healthz`";

    // --- resources, restart, stop
    memory_bad_unit: "services:\n  web:\n    run: [srv]\n    resources:\n      memory: 256MB\n"
        => "demo.yaml:5:15: services.web.resources.memory: invalid memory quantity `256MB`: use a number with Ki, Mi, Gi, Ti (binary) or K, M, G, T (decimal), e.g. `256Mi`";
    memory_zero: "services:\n  web:\n    run: [srv]\n    resources: { memory: 0 }\n"
        => "demo.yaml:4:26: services.web.resources.memory: memory must be greater than 0, e.g. `256Mi`";
    memory_fractional_bytes: "services:\n  web:\n    run: [srv]\n    resources: { memory: 1.5 }\n"
        => "invalid memory quantity `1.5`: not a whole number of bytes";
    cpu_bad: "services:\n  web:\n    run: [srv]\n    resources: { cpu: lots }\n"
        => "demo.yaml:4:23: services.web.resources.cpu: invalid cpu quantity `lots`: use cores (e.g. `0.5`, `2`) or millicores (e.g. `500m`)";
    cpu_zero: "services:\n  web:\n    run: [srv]\n    resources: { cpu: 0 }\n"
        => "services.web.resources.cpu: cpu must be greater than 0";
    cpu_too_fine: "services:\n  web:\n    run: [srv]\n    resources: { cpu: 0.0005 }\n"
        => "invalid cpu quantity `0.0005`: the smallest unit is 1m (0.001 cores)";
    cpu_negative: "services:\n  web:\n    run: [srv]\n    resources: { cpu: -1 }\n"
        => "invalid cpu quantity `-1`";
    restart_typo: "services:\n  web:\n    run: [srv]\n    restart: on_failure\n"
        => "demo.yaml:4:14: services.web.restart: invalid restart policy `on_failure`, did you mean `on-failure`? (valid: always, on-failure, never)";
    stop_signal_typo: "services:\n  web:\n    run: [srv]\n    stop: { signal: SIGTREM }\n"
        => "demo.yaml:4:21: services.web.stop.signal: unknown stop signal `SIGTREM`, did you mean `SIGTERM`? (valid: SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGKILL)";
    stop_grace_bad: "services:\n  web:\n    run: [srv]\n    stop: { grace: soon }\n"
        => "demo.yaml:4:20: services.web.stop.grace: invalid duration `soon`";
    stop_unknown_field: "services:\n  web:\n    run: [srv]\n    stop: { sig: TERM }\n"
        => "services.web.stop: unknown field `sig`, did you mean `signal`? (valid fields: signal, grace)";

    // --- routes
    route_unknown_service: "services:\n  web: {run: a, ports: {http: 80}}\n  db: {run: b, ports: {pg: 5432}}\nroutes:\n  - host: demo.localhost\n    service: wbe\n"
        => "demo.yaml:6:14: routes[0].service: route to unknown service `wbe`, did you mean `web`? (services: web, db)";
    route_no_services: "routes:\n  - host: a.b\n    service: web\n"
        => "demo.yaml:3:14: routes[0].service: route to unknown service `web`: no services are defined";
    route_unknown_port: &web("routes:\n  - host: a.b\n    service: web\n    port: htp\n")
        => "demo.yaml:8:11: routes[0].port: port `htp` is not declared by service `web`, did you mean `http`? (ports: http=8080)";
    route_port_needed: "services:\n  web:\n    run: [srv]\n    ports: { http: 80, admin: 81 }\nroutes:\n  - host: a.b\n    service: web\n"
        => "demo.yaml:6:5: routes[0].port: missing `port`: service `web` has several ports (http, admin); choose one with `port:`";
    route_service_without_ports: "services:\n  web: {run: [srv]}\nroutes:\n  - host: a.b\n    service: web\n"
        => "demo.yaml:4:5: routes[0].port: service `web` declares no ports, so nothing can be routed to it";
    route_host_with_port: &web("routes:\n  - host: demo.localhost:8080\n    service: web\n")
        => "demo.yaml:6:11: routes[0].host: invalid host `demo.localhost:8080`: write only the host name, without a port";
    route_host_with_scheme: &web("routes:\n  - host: https://demo.localhost\n    service: web\n")
        => "without a scheme such as `http://`";
    route_host_bad_wildcard: &web("routes:\n  - host: a.*.b\n    service: web\n")
        => "a wildcard is only allowed as a whole first label";
    route_host_underscore: &web("routes:\n  - host: my_app.localhost\n    service: web\n")
        => "routes[0].host: invalid host `my_app.localhost`";
    route_path_relative: &web("routes:\n  - host: a.b\n    path: api\n    service: web\n")
        => "demo.yaml:7:11: routes[0].path: route path `api` must start with `/`, e.g. `/api`";
    route_path_query: &web("routes:\n  - host: a.b\n    path: /x?y=1\n    service: web\n")
        => "route path `/x?y=1` cannot contain `?` or `#`";
    route_duplicate: &web("routes:\n  - host: a.b\n    service: web\n  - host: A.B\n    path: /\n    service: web\n")
        => "demo.yaml:8:5: routes[1]: duplicate route: host `a.b` path `/` is already routed by routes[0] (demo.yaml:6:5)";
    route_item_empty: &web("routes:\n  -\n  - { host: a.b, service: web }\n")
        => "routes[0]: empty route: each route needs at least `host` and `service`";
    route_host_empty: &web("routes:\n  - { host: '', service: web }\n")
        => "demo.yaml:6:13: routes[0].host: host is empty";
    route_item_not_a_map: &web("routes:\n  - a.b\n")
        => "demo.yaml:6:5: routes[0]: expected a mapping with fields host, path, service, port, tls, https_redirect, timeout, found string `a.b`";

    // --- placement
    placement_unknown_field: &web("    placement: { node_selectr: {gpu: 'true'} }\n")
        => "demo.yaml:5:18: services.web.placement: unknown field `node_selectr`, did you mean `node_selector`? (valid fields: node_selector, spread, anti_affinity)";
    placement_camel_case: &web("    placement: { nodeSelector: {gpu: 'true'} }\n")
        => "services.web.placement: unknown field `nodeSelector`, did you mean `node_selector`?";
    placement_field_outside_block: &web("    node_selector: {gpu: 'true'}\n")
        => "demo.yaml:5:5: services.web: unknown field `node_selector`: `node_selector` belongs in `placement`";
    placement_not_a_map: &web("    placement: sites\n")
        => "demo.yaml:5:16: services.web.placement: expected a mapping with fields node_selector, spread, anti_affinity, found string `sites`";
    spread_typo: &web("    placement: { spread: site }\n")
        => "demo.yaml:5:26: services.web.placement.spread: invalid spread `site`, did you mean `sites`? (valid: nodes = over nodes (the default), sites = over sites first)";
    spread_list: &web("    placement: { spread: [sites] }\n")
        => "demo.yaml:5:26: services.web.placement.spread: expected one of nodes, sites, found a list";
    selector_key_invalid: &web("    placement:\n      node_selector: { GPU: 'true' }\n")
        => "demo.yaml:6:24: services.web.placement.node_selector.GPU: invalid label key `GPU`: use 1-63 lowercase letters, digits, '-', '_' and '.', starting with a letter and ending with a letter or digit, e.g. `gpu`";
    selector_value_invalid: &web("    placement:\n      node_selector: { gpu: 'yes please' }\n")
        => "demo.yaml:6:29: services.web.placement.node_selector.gpu: invalid value `yes please` for label `gpu`: use 1-63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit";
    selector_value_missing: &web("    placement:\n      node_selector:\n        gpu:\n")
        => "demo.yaml:7:9: services.web.placement.node_selector.gpu: label `gpu` has no value: give the value nodes must have, e.g. `gpu: \"true\"`";
    selector_value_list: &web("    placement:\n      node_selector: { gpu: [a, b] }\n")
        => "demo.yaml:6:29: services.web.placement.node_selector.gpu: expected a label value such as `arm64` or `\"true\"`, found a list";
    selector_not_a_map: &web("    placement:\n      node_selector: [gpu]\n")
        => "demo.yaml:6:22: services.web.placement.node_selector: expected a mapping of node labels to the values they must have, e.g. `{ arch: arm64, gpu: \"true\" }`, found a list";
    selector_key_twice: &web("    placement:\n      node_selector:\n        gpu: a\n        gpu: b\n")
        => "demo.yaml:8:9: services.web.placement.node_selector.gpu: label `gpu` is defined twice (first at demo.yaml:7:9)";
    anti_affinity_unknown: "services:\n  web:\n    run: [srv]\n    placement: { anti_affinity: [dbb] }\n  db:\n    run: [pg]\n"
        => "demo.yaml:4:34: services.web.placement.anti_affinity[0]: anti_affinity names unknown service `dbb`, did you mean `db`? (services of project `default`: db)";
    anti_affinity_alone: "project: shop\nservices:\n  web:\n    run: [srv]\n    placement: { anti_affinity: [db] }\n"
        => "demo.yaml:5:34: services.web.placement.anti_affinity[0]: anti_affinity names unknown service `db`: project `shop` has no other services (anti_affinity only refers to services of the same project)";
    anti_affinity_self: &web("    placement: { anti_affinity: [web] }\n")
        => "demo.yaml:5:34: services.web.placement.anti_affinity[0]: service `web` cannot be anti-affine with itself";
    anti_affinity_twice: "services:\n  web:\n    run: [srv]\n    placement: { anti_affinity: [db, db] }\n  db:\n    run: [pg]\n"
        => "demo.yaml:4:38: services.web.placement.anti_affinity[1]: `db` is listed twice (first at services.web.placement.anti_affinity[0] (demo.yaml:4:34)); remove one";
    anti_affinity_string: &web("    placement: { anti_affinity: db }\n")
        => "demo.yaml:5:33: services.web.placement.anti_affinity: expected a list of services of this project, e.g. `[db]`, found string `db`";
    anti_affinity_item_map: &web("    placement: { anti_affinity: [{name: db}] }\n")
        => "demo.yaml:5:34: services.web.placement.anti_affinity[0]: expected a service name, found a mapping";
}

#[test]
fn all_errors_are_reported_in_order() {
    let yaml = "
        services:
          web:
            run: [srv]
            replica: 3
            resources: { memory: 256MB, cpu: x }
          Db:
            run: pg
        routes:
          - host: demo.localhost
            service: wbe
    ";
    check_errs_exactly(
        yaml,
        &[
            "demo.yaml:4:5: services.web: unknown field `replica`, did you mean `replicas`? (valid fields: run, image, replicas, workdir, env, files, ports, health, resources, restart, stop, placement)",
            "demo.yaml:5:26: services.web.resources.memory: invalid memory quantity `256MB`: use a number with Ki, Mi, Gi, Ti (binary) or K, M, G, T (decimal), e.g. `256Mi`",
            "demo.yaml:5:38: services.web.resources.cpu: invalid cpu quantity `x`: use cores (e.g. `0.5`, `2`) or millicores (e.g. `500m`)",
            "demo.yaml:6:3: services.Db: invalid service name `Db`: use 1-63 lowercase letters, digits and '-', starting with a letter and not ending with '-', e.g. `db`",
            "demo.yaml:10:14: routes[0].service: route to unknown service `wbe`, did you mean `web`? (services: web, Db)",
        ],
    );
}

#[test]
fn broken_fields_do_not_cascade() {
    // A service whose `run` is broken still exists for routes; a port with a
    // bad number still exists by name; a bad interval does not cause a
    // timeout-vs-interval error.
    let errs = errors(
        "
        services:
          web:
            run: 5
            ports: { http: huge }
            health: { tcp: http, interval: soon, timeout: 9s }
        routes:
          - host: a.b
            service: web
            port: http
    ",
    );
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(errs[0].starts_with("demo.yaml:3:10: services.web.run: expected a command"));
    assert!(errs[1].starts_with("demo.yaml:4:20: services.web.ports.http: expected a port number"));
    assert!(errs[2].starts_with("demo.yaml:5:36: services.web.health.interval: invalid duration `soon`"));
}

#[test]
fn default_timeout_never_exceeds_a_short_interval() {
    let stack = common::check_ok(&web("    health: { tcp: http, interval: 500ms }\n"));
    let health = stack.services["web"].health.clone();
    assert_eq!(health.map(|h| (h.interval_ms, h.timeout_ms)), Some((500, 500)));
}

#[test]
fn errors_display_one_per_line() {
    let err = holdfast_spec::parse_str("x.yaml", "services:\n  a: {run: []}\n  b: {run: []}\n")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert_eq!(
        err,
        "x.yaml:2:12: services.a.run: the command list is empty: give at least the program, e.g. `[\"my-server\", \"--flag\"]`\n\
         x.yaml:3:12: services.b.run: the command list is empty: give at least the program, e.g. `[\"my-server\", \"--flag\"]`"
    );
}

#[test]
fn error_kinds_are_set() {
    use holdfast_spec::SpecErrorKind::*;
    let cases: &[(&str, holdfast_spec::SpecErrorKind)] = &[
        ("a: [\n", Syntax),
        ("services:\n  web: {run: x, replica: 1}\n", UnknownField),
        ("services:\n  web: {replicas: 1}\n", MissingField),
        ("services:\n  web: {run: 5}\n", WrongType),
        ("services:\n  web: {run: x, replicas: 5000}\n", InvalidValue),
        ("services:\n  web: {run: x}\n  web: {run: y}\n", Duplicate),
        ("routes:\n  - {host: a.b, service: web}\n", UnknownReference),
    ];
    for (yaml, kind) in cases {
        let errs = holdfast_spec::parse_str("k.yaml", yaml).err().map(|e| e.0).unwrap_or_default();
        assert_eq!(errs.len(), 1, "{yaml}: {errs:#?}");
        assert_eq!(errs[0].kind, *kind, "{yaml}");
        assert_eq!(errs[0].file.as_deref(), Some("k.yaml"));
        assert!(errs[0].pos.is_some(), "{yaml}");
    }
}
