//! Semantic rules of a spec, checked on the canonical [`Stack`]: names,
//! ranges, health-check timing, references from health checks and routes
//! to declared ports and services, duplicate ports and routes, node label
//! selectors and anti-affinity references; databases (names against services,
//! instances and `sync`, PostgreSQL names, parameters) and the database URLs of
//! `env`; routes' edge options (`tls` secrets, `tls: auto` never on a wildcard,
//! `https_redirect` only with `tls`, `timeout`); DNS zones (distinct, none inside
//! another, TTLs) and their records (names and canonical values via [`crate::dns`],
//! a CNAME alone at its name and never at the apex, no addresses for a routed host).
//!
//! The same code serves [`Stack::validate`] (no file positions: errors name
//! the field path) and the YAML loader, which supplies positions through a
//! [`Sink`] and marks fields that already failed to parse as "poisoned" so
//! that no rule reads their placeholder values.

use std::collections::{BTreeMap, HashMap};

use crate::dns::{canonical_value, full_name, record_name_problem, ttl_problem, zone_name_problem};
use crate::error::{SpecError, SpecErrorKind};
use crate::model::{
    DatabaseSpec, DbEndpoint, DbEngine, EnvValue, HealthCheck, PlacementSpec, RecordType, Resources, RouteSpec,
    RouteTls, RunCommand, ServiceSpec, Stack, SyncLoss, ZoneSpec, MAX_DB_INSTANCES, MAX_REPLICAS, MAX_ROUTE_TIMEOUT_MS,
    REDIS_DEFAULT_USER,
};
use crate::names::{dns_label_problem, env_name_problem, host_problem, label_key_problem, label_value_problem};
use crate::path::FieldPath;
use crate::pg_params::{classify, ParamKind, KNOWN as PG_KNOWN};
use crate::suggest::suggestion_suffix;
use crate::units::format_duration_ms;

/// Sort key of a declaration: (file index, line, column).
pub(crate) type PositionKey = (usize, u32, u32);

/// Which part of a mapping entry an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The key (a name that is wrong, a whole entry that is incomplete).
    Key,
    /// The value.
    Value,
}

/// Where validation errors go.
pub(crate) trait Sink {
    /// True if `path` or one of its ancestors failed to parse.
    fn is_poisoned(&self, path: &FieldPath) -> bool;
    /// Records one error.
    fn report(&mut self, kind: SpecErrorKind, path: &FieldPath, target: Target, message: String);
    /// Names another node in a message, e.g. `routes[0] (demo.yaml:18:5)`.
    fn describe(&self, path: &FieldPath) -> String;
    /// Sort key by declaration position, if known.
    fn position_key(&self, path: &FieldPath) -> Option<PositionKey>;
}

/// The sink of [`Stack::validate`]: paths only.
#[derive(Default)]
pub(crate) struct PlainSink {
    pub(crate) errors: Vec<SpecError>,
}

impl Sink for PlainSink {
    fn is_poisoned(&self, _: &FieldPath) -> bool {
        false
    }

    fn report(&mut self, kind: SpecErrorKind, path: &FieldPath, _: Target, message: String) {
        self.errors.push(SpecError::new(kind, path.to_string(), message));
    }

    fn describe(&self, path: &FieldPath) -> String {
        path.to_string()
    }

    fn position_key(&self, _: &FieldPath) -> Option<PositionKey> {
        None
    }
}

/// Names in declaration order where known, else alphabetical.
fn in_declared_order<'a>(sink: &dyn Sink, parent: &FieldPath, names: impl Iterator<Item = &'a String>) -> Vec<&'a str> {
    let mut v: Vec<(Option<PositionKey>, &'a str)> =
        names.map(|n| (sink.position_key(&parent.key(n)), n.as_str())).collect();
    v.sort_by(|a, b| match (a.0, b.0) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.1.cmp(b.1),
    });
    v.into_iter().map(|(_, n)| n).collect()
}

/// Checks every semantic rule of `stack`.
pub(crate) fn validate_stack(stack: &Stack, sink: &mut dyn Sink) {
    let root = FieldPath::root();
    let project = root.field("project");
    if !sink.is_poisoned(&project) {
        if let Some(msg) = dns_label_problem("project name", &stack.project) {
            sink.report(SpecErrorKind::InvalidValue, &project, Target::Value, msg);
        }
    }
    let services_path = root.field("services");
    for (name, svc) in &stack.services {
        validate_service(stack, name, svc, &services_path.key(name), sink);
        validate_placement(stack, name, svc, &services_path.key(name), sink);
    }
    validate_routes(stack, sink);
    validate_zones(stack, sink);
    let databases_path = root.field("databases");
    for (name, db) in &stack.databases {
        validate_database(stack, name, db, &databases_path.key(name), sink);
    }
    let jobs_path = root.field("jobs");
    for (name, job) in &stack.jobs {
        validate_job(stack, name, job, &jobs_path.key(name), sink);
    }
    let secrets_path = root.field("secrets");
    for name in stack.secrets.keys() {
        let p = secrets_path.key(name);
        if let Some(msg) = dns_label_problem("secret name", name) {
            sink.report(SpecErrorKind::InvalidValue, &p, Target::Key, msg);
        }
    }
}

fn validate_run(run: &RunCommand, path: &FieldPath, sink: &mut dyn Sink) {
    if sink.is_poisoned(path) {
        return;
    }
    match run {
        RunCommand::Argv(argv) => {
            match argv.first() {
                None => sink.report(
                    SpecErrorKind::InvalidValue,
                    path,
                    Target::Value,
                    "the command list is empty: give at least the program, e.g. `[\"my-server\", \"--flag\"]`"
                        .to_string(),
                ),
                Some(prog) if prog.trim().is_empty() => sink.report(
                    SpecErrorKind::InvalidValue,
                    &path.index(0),
                    Target::Value,
                    "the program (first item of the command) is empty".to_string(),
                ),
                Some(_) => {}
            }
            for (i, arg) in argv.iter().enumerate() {
                if arg.contains('\0') {
                    sink.report(
                        SpecErrorKind::InvalidValue,
                        &path.index(i),
                        Target::Value,
                        "command arguments cannot contain a NUL character".to_string(),
                    );
                }
            }
        }
        RunCommand::Shell(script) => {
            if script.trim().is_empty() {
                sink.report(
                    SpecErrorKind::InvalidValue,
                    path,
                    Target::Value,
                    "the shell command is empty, e.g. `\"python3 -m http.server $PORT\"`".to_string(),
                );
            } else if script.contains('\0') {
                sink.report(
                    SpecErrorKind::InvalidValue,
                    path,
                    Target::Value,
                    "the shell command cannot contain a NUL character".to_string(),
                );
            }
        }
    }
}

/// The environment variable the runtime sets for port `name`.
pub(crate) fn port_env_name(name: &str) -> String {
    format!("PORT_{}", name.to_ascii_uppercase().replace('-', "_"))
}

fn port_reference(
    service: &str,
    svc: &ServiceSpec,
    port: &str,
    svc_path: &FieldPath,
    path: &FieldPath,
    sink: &mut dyn Sink,
) {
    let ports_path = svc_path.field("ports");
    if sink.is_poisoned(path) || sink.is_poisoned(&ports_path) || svc.ports.contains_key(port) {
        return;
    }
    let declared = in_declared_order(sink, &ports_path, svc.ports.keys());
    let msg = if declared.is_empty() {
        format!(
            "port `{port}` is not declared: service `{service}` declares no ports; add one under `ports:`, e.g. `ports: {{ http: 8080 }}`"
        )
    } else {
        let by_number = port
            .parse::<u16>()
            .ok()
            .and_then(|n| svc.ports.iter().find(|(_, p)| **p == n))
            .map(|(name, _)| format!(", did you mean `{name}`? (ports are referred to by name)"));
        let suffix = by_number.unwrap_or_else(|| suggestion_suffix(port, declared.iter().copied()));
        let list: Vec<String> =
            declared.iter().map(|n| format!("{n}={}", svc.ports.get(*n).copied().unwrap_or(0))).collect();
        format!("port `{port}` is not declared by service `{service}`{suffix} (ports: {})", list.join(", "))
    };
    sink.report(SpecErrorKind::UnknownReference, path, Target::Value, msg);
}

fn validate_service(stack: &Stack, name: &str, svc: &ServiceSpec, sp: &FieldPath, sink: &mut dyn Sink) {
    if sink.is_poisoned(sp) {
        return;
    }
    if let Some(msg) = dns_label_problem("service name", name) {
        sink.report(SpecErrorKind::InvalidValue, sp, Target::Key, msg);
    }
    let image_default_command = svc.image.is_some() && matches!(&svc.run, RunCommand::Argv(a) if a.is_empty());
    if !image_default_command {
        validate_run(&svc.run, &sp.field("run"), sink);
    }
    if let Some(image) = &svc.image {
        let ip = sp.field("image");
        if !sink.is_poisoned(&ip) {
            match crate::image::parse_image(image) {
                Ok(r) if r.to_string() == *image => {}
                Ok(r) => sink.report(
                    SpecErrorKind::InvalidValue,
                    &ip,
                    Target::Value,
                    format!("image `{image}` is not written fully qualified (`{r}`)"),
                ),
                Err(msg) => sink.report(SpecErrorKind::InvalidValue, &ip, Target::Value, msg),
            }
        }
    }

    let replicas = sp.field("replicas");
    if !sink.is_poisoned(&replicas) && svc.replicas > MAX_REPLICAS {
        sink.report(
            SpecErrorKind::InvalidValue,
            &replicas,
            Target::Value,
            format!("replicas must be between 0 and {MAX_REPLICAS}, found {}", svc.replicas),
        );
    }

    let workdir = sp.field("workdir");
    if let Some(dir) = &svc.workdir {
        if !sink.is_poisoned(&workdir) {
            let shown = dir.display().to_string();
            if shown.is_empty() {
                sink.report(
                    SpecErrorKind::InvalidValue,
                    &workdir,
                    Target::Value,
                    "workdir is empty: give an absolute path, e.g. `/srv/web`, or leave it out".to_string(),
                );
            } else if !dir.is_absolute() {
                sink.report(
                    SpecErrorKind::InvalidValue,
                    &workdir,
                    Target::Value,
                    format!("workdir `{shown}` must be an absolute path, e.g. `/srv/{shown}`"),
                );
            } else if shown.contains('\0') {
                sink.report(
                    SpecErrorKind::InvalidValue,
                    &workdir,
                    Target::Value,
                    "workdir cannot contain a NUL character".to_string(),
                );
            }
        }
    }

    validate_env_and_files(stack, &svc.env, &svc.files, svc.workdir.as_deref(), &svc.ports, sp, sink);

    let ports_path = sp.field("ports");
    if !sink.is_poisoned(&ports_path) {
        let mut by_number: BTreeMap<u16, Vec<&str>> = BTreeMap::new();
        for name in in_declared_order(sink, &ports_path, svc.ports.keys()) {
            let p = ports_path.key(name);
            if sink.is_poisoned(&p) {
                continue;
            }
            if let Some(msg) = dns_label_problem("port name", name) {
                sink.report(SpecErrorKind::InvalidValue, &p, Target::Key, msg);
            }
            let number = svc.ports.get(name).copied().unwrap_or(0);
            if number == 0 {
                sink.report(
                    SpecErrorKind::InvalidValue,
                    &p,
                    Target::Value,
                    "port must be between 1 and 65535, found 0".to_string(),
                );
                continue;
            }
            let users = by_number.entry(number).or_default();
            if let Some(first) = users.first() {
                sink.report(
                    SpecErrorKind::Duplicate,
                    &p,
                    Target::Value,
                    format!(
                        "port {number} is already used by port `{first}` of this service; each named port needs its own number"
                    ),
                );
            }
            users.push(name);
        }
    }

    if let Some(health) = &svc.health {
        let hp = sp.field("health");
        if !sink.is_poisoned(&hp) {
            match &health.check {
                HealthCheck::Http { port, path } => {
                    let http = hp.field("http");
                    port_reference(name, svc, port, sp, &http.field("port"), sink);
                    let path_p = http.field("path");
                    if !sink.is_poisoned(&path_p) {
                        if let Some(msg) = url_path_problem("health check path", path) {
                            sink.report(SpecErrorKind::InvalidValue, &path_p, Target::Value, msg);
                        }
                    }
                }
                HealthCheck::Tcp { port } => {
                    port_reference(name, svc, port, sp, &hp.field("tcp").field("port"), sink);
                }
                HealthCheck::Exec { command } => {
                    validate_run(command, &hp.field("exec"), sink);
                }
            }
            let interval = hp.field("interval");
            let timeout = hp.field("timeout");
            let interval_ok = !sink.is_poisoned(&interval);
            let timeout_ok = !sink.is_poisoned(&timeout);
            if interval_ok && health.interval_ms == 0 {
                sink.report(
                    SpecErrorKind::InvalidValue,
                    &interval,
                    Target::Value,
                    "interval must be greater than 0, e.g. `2s`".to_string(),
                );
            }
            if timeout_ok && health.timeout_ms == 0 {
                sink.report(
                    SpecErrorKind::InvalidValue,
                    &timeout,
                    Target::Value,
                    "timeout must be greater than 0, e.g. `1s`".to_string(),
                );
            } else if interval_ok && timeout_ok && health.timeout_ms > health.interval_ms {
                sink.report(
                    SpecErrorKind::InvalidValue,
                    &timeout,
                    Target::Value,
                    format!(
                        "timeout {} is longer than interval {}: the timeout must be at most the interval",
                        format_duration_ms(health.timeout_ms),
                        format_duration_ms(health.interval_ms)
                    ),
                );
            }
            for (field, value) in
                [("healthy_threshold", health.healthy_threshold), ("unhealthy_threshold", health.unhealthy_threshold)]
            {
                let p = hp.field(field);
                if !sink.is_poisoned(&p) && value == 0 {
                    sink.report(
                        SpecErrorKind::InvalidValue,
                        &p,
                        Target::Value,
                        format!("{field} must be at least 1, found 0"),
                    );
                }
            }
        }
    }

    validate_resources(&svc.resources, &sp.field("resources"), sink);
}

fn validate_resources(resources: &Resources, res: &FieldPath, sink: &mut dyn Sink) {
    let cpu = res.field("cpu");
    if resources.cpu_millis == Some(0) && !sink.is_poisoned(&cpu) {
        sink.report(
            SpecErrorKind::InvalidValue,
            &cpu,
            Target::Value,
            "cpu must be greater than 0, e.g. `0.5` or `500m`".to_string(),
        );
    }
    let memory = res.field("memory");
    if resources.memory_bytes == Some(0) && !sink.is_poisoned(&memory) {
        sink.report(
            SpecErrorKind::InvalidValue,
            &memory,
            Target::Value,
            "memory must be greater than 0, e.g. `256Mi`".to_string(),
        );
    }
}

/// `placement:`: label keys and values of the node selector, and anti-affinity names
/// that exist in the project, are not the service itself and are not repeated.
fn validate_placement(stack: &Stack, name: &str, svc: &ServiceSpec, sp: &FieldPath, sink: &mut dyn Sink) {
    let pp = sp.field("placement");
    if sink.is_poisoned(sp) || sink.is_poisoned(&pp) {
        return;
    }
    validate_node_selector(&svc.placement, &pp, sink);
    let anti = pp.field("anti_affinity");
    if sink.is_poisoned(&anti) {
        return;
    }
    let services_path = FieldPath::root().field("services");
    for (i, other) in svc.placement.anti_affinity.iter().enumerate() {
        let p = anti.index(i);
        if sink.is_poisoned(&p) {
            continue;
        }
        if other == name {
            sink.report(
                SpecErrorKind::InvalidValue,
                &p,
                Target::Value,
                format!(
                    "service `{name}` cannot be anti-affine with itself: its replicas already share a node only when no other node fits (use `spread: sites` to spread them over sites too)"
                ),
            );
        } else if let Some(first) = svc.placement.anti_affinity[..i].iter().position(|o| o == other) {
            let first = sink.describe(&anti.index(first));
            sink.report(
                SpecErrorKind::Duplicate,
                &p,
                Target::Value,
                format!("`{}` is listed twice (first at {first}); remove one", other.escape_debug()),
            );
        } else if !stack.services.contains_key(other) {
            let names: Vec<&str> = in_declared_order(sink, &services_path, stack.services.keys())
                .into_iter()
                .filter(|n| *n != name)
                .collect();
            let msg = if names.is_empty() {
                format!(
                    "anti_affinity names unknown service `{}`: project `{}` has no other services (anti_affinity only refers to services of the same project)",
                    other.escape_debug(),
                    stack.project
                )
            } else {
                format!(
                    "anti_affinity names unknown service `{}`{} (services of project `{}`: {})",
                    other.escape_debug(),
                    suggestion_suffix(other, names.iter().copied()),
                    stack.project,
                    names.join(", ")
                )
            };
            sink.report(SpecErrorKind::UnknownReference, &p, Target::Value, msg);
        }
    }
}

/// The label keys and values of a `placement.node_selector`.
fn validate_node_selector(placement: &PlacementSpec, pp: &FieldPath, sink: &mut dyn Sink) {
    let sel = pp.field("node_selector");
    if !sink.is_poisoned(&sel) {
        for (key, value) in &placement.node_selector {
            let p = sel.key(key);
            if sink.is_poisoned(&p) {
                continue;
            }
            if let Some(msg) = label_key_problem(key) {
                sink.report(SpecErrorKind::InvalidValue, &p, Target::Key, msg);
            } else if let Some(msg) = label_value_problem(key, value) {
                sink.report(SpecErrorKind::InvalidValue, &p, Target::Value, msg);
            }
        }
    }
}

fn validate_job(stack: &Stack, name: &str, job: &crate::model::JobSpec, jp: &FieldPath, sink: &mut dyn Sink) {
    if sink.is_poisoned(jp) {
        return;
    }
    if let Some(msg) = dns_label_problem("job name", name) {
        sink.report(SpecErrorKind::InvalidValue, jp, Target::Key, msg);
    } else if stack.services.contains_key(name) || stack.databases.contains_key(name) {
        let what = if stack.services.contains_key(name) { "service" } else { "database" };
        sink.report(
            SpecErrorKind::Duplicate,
            jp,
            Target::Key,
            format!("job `{name}` has the name of a {what} of this stack; jobs, services and databases need names of their own"),
        );
    }
    validate_run(&job.run, &jp.field("run"), sink);
    let workdir = jp.field("workdir");
    if let Some(dir) = &job.workdir {
        if !sink.is_poisoned(&workdir) && !dir.is_absolute() {
            sink.report(
                SpecErrorKind::InvalidValue,
                &workdir,
                Target::Value,
                format!("workdir `{}` must be an absolute path", dir.display()),
            );
        }
    }
    validate_env_and_files(stack, &job.env, &job.files, job.workdir.as_deref(), &BTreeMap::new(), jp, sink);
    let sw = jp.field("secrets_write");
    if !sink.is_poisoned(&sw) {
        for (i, secret) in job.secrets_write.iter().enumerate() {
            validate_secret_ref(stack, secret, &sw.index(i), sink);
        }
    }
    if let Some(crate::schedule::JobSchedule::Cron(expr)) = &job.schedule {
        let p = jp.field("schedule");
        if !sink.is_poisoned(&p) {
            if let Err(msg) = crate::schedule::check_cron(expr) {
                sink.report(SpecErrorKind::InvalidValue, &p, Target::Value, msg);
            }
        }
    }
    if job.retries > crate::model::MAX_JOB_RETRIES {
        sink.report(
            SpecErrorKind::InvalidValue,
            &jp.field("retries"),
            Target::Value,
            format!("retries must be between 0 and {}, found {}", crate::model::MAX_JOB_RETRIES, job.retries),
        );
    }
    if !(1_000..=7 * 24 * 3_600_000).contains(&job.timeout_ms) {
        sink.report(
            SpecErrorKind::InvalidValue,
            &jp.field("timeout"),
            Target::Value,
            "timeout must be between 1s and 7 days".to_string(),
        );
    }
}

/// `env` and `files` of a service or a job: names, values, database URLs and secret
/// references (`ports`: the service's named ports, whose variables holdfast sets).
fn validate_env_and_files(
    stack: &Stack,
    env: &BTreeMap<String, EnvValue>,
    files: &BTreeMap<String, crate::model::FileSource>,
    workdir: Option<&std::path::Path>,
    ports: &BTreeMap<String, u16>,
    sp: &FieldPath,
    sink: &mut dyn Sink,
) {
    let env_path = sp.field("env");
    if !sink.is_poisoned(&env_path) {
        for (key, value) in env {
            let p = env_path.key(key);
            if sink.is_poisoned(&p) {
                continue;
            }
            if let Some(msg) = env_name_problem(key) {
                sink.report(SpecErrorKind::InvalidValue, &p, Target::Key, msg);
            } else if !ports.is_empty() && (key == "PORT" || ports.keys().any(|n| port_env_name(n) == *key)) {
                sink.report(
                    SpecErrorKind::InvalidValue,
                    &p,
                    Target::Key,
                    format!(
                        "`{key}` is set by holdfast for each instance (PORT and PORT_<NAME> carry the instance's listen ports); remove it from env"
                    ),
                );
            }
            match value {
                EnvValue::Value(value) => {
                    if value.contains('\0') {
                        sink.report(
                            SpecErrorKind::InvalidValue,
                            &p,
                            Target::Value,
                            "environment values cannot contain a NUL character".to_string(),
                        );
                    }
                }
                EnvValue::Url { url, user, endpoint } => {
                    validate_env_url(stack, url, *endpoint, user.as_deref(), &p, sink);
                }
                EnvValue::Secret { secret } => validate_secret_ref(stack, secret, &p.field("secret"), sink),
            }
        }
    }

    let files_path = sp.field("files");
    if !sink.is_poisoned(&files_path) {
        for (path, source) in files {
            let p = files_path.key(path);
            if sink.is_poisoned(&p) {
                continue;
            }
            if let Some(msg) = secret_file_problem(path, workdir) {
                sink.report(SpecErrorKind::InvalidValue, &p, Target::Key, msg);
            }
            validate_secret_ref(stack, &source.secret, &p.field("secret"), sink);
        }
    }
}

/// Directories a secret file may not be put in: the file's directory is replaced, in the
/// instance's view, by one holding only its secret files.
const SYSTEM_DIRS: &[&str] = &[
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/opt", "/proc", "/root", "/run",
    "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var",
];

/// Why `path` cannot hold a secret file, if it cannot: it must be absolute and plain, and
/// its directory must not be a system directory nor hold the service's workdir (the
/// instance sees only its secret files in that directory).
pub(crate) fn secret_file_problem(path: &str, workdir: Option<&std::path::Path>) -> Option<String> {
    let shown = path.escape_debug();
    if !path.starts_with('/') {
        return Some(format!("file path `{shown}` must be absolute, e.g. `/run/secrets/{shown}`"));
    }
    if path.contains('\0') {
        return Some("a file path cannot contain a NUL character".to_string());
    }
    if path.ends_with('/') || path.contains("//") || path.split('/').any(|c| c == "." || c == "..") {
        return Some(format!(
            "file path `{shown}` must be a plain path to a file (no `.`, `..`, `//` or trailing `/`)"
        ));
    }
    let dir = std::path::Path::new(path).parent().map(|d| d.to_string_lossy().into_owned()).unwrap_or_default();
    let dir = if dir.is_empty() { "/".to_string() } else { dir };
    if SYSTEM_DIRS.contains(&dir.as_str()) {
        return Some(format!(
            "`{shown}` is directly in `{dir}`: the instance sees only its secret files in a secret file's directory, so put it in a directory of its own, e.g. `/run/secrets/{}`",
            path.rsplit('/').next().unwrap_or("key").escape_debug()
        ));
    }
    if let Some(w) = workdir {
        if w.starts_with(&dir) {
            return Some(format!(
                "`{shown}` is in `{dir}`, which holds the workdir `{}`: the instance sees only its secret files in that directory; use a directory of its own, e.g. `/run/secrets`",
                w.display()
            ));
        }
    }
    None
}

/// `{ secret: S }`: `S` is declared in the stack's `secrets:`.
fn validate_secret_ref(stack: &Stack, secret: &str, p: &FieldPath, sink: &mut dyn Sink) {
    if sink.is_poisoned(p) || stack.secrets.contains_key(secret) {
        return;
    }
    let secrets_path = FieldPath::root().field("secrets");
    let names = in_declared_order(sink, &secrets_path, stack.secrets.keys());
    let msg = if names.is_empty() {
        format!(
            "secret `{}` is not declared: add `secrets: {{ {}: {{}} }}` at the top level of project `{}`, then set its value with `holdfast secret set {}/{}`",
            secret.escape_debug(),
            secret.escape_debug(),
            stack.project,
            stack.project,
            secret.escape_debug()
        )
    } else {
        format!(
            "secret `{}` is not declared in project `{}`{} (declared: {})",
            secret.escape_debug(),
            stack.project,
            suggestion_suffix(secret, names.iter().copied()),
            names.join(", ")
        )
    };
    sink.report(SpecErrorKind::UnknownReference, p, Target::Value, msg);
}

/// `{ url: X, endpoint: E, user: U }`: `X` is a database of the stack, `E` one of its
/// engine's endpoints and `U` one of its users.
fn validate_env_url(
    stack: &Stack,
    url: &str,
    endpoint: DbEndpoint,
    user: Option<&str>,
    p: &FieldPath,
    sink: &mut dyn Sink,
) {
    let up = p.field("url");
    if sink.is_poisoned(&up) {
        return;
    }
    let databases_path = FieldPath::root().field("databases");
    let Some(db) = stack.databases.get(url) else {
        let names = in_declared_order(sink, &databases_path, stack.databases.keys());
        let msg = if names.is_empty() {
            format!(
                "`{}` is not a database: project `{}` defines none (add one under the top-level `databases:`)",
                url.escape_debug(),
                stack.project
            )
        } else {
            format!(
                "`{}` is not a database of project `{}`{} (databases: {})",
                url.escape_debug(),
                stack.project,
                suggestion_suffix(url, names.iter().copied()),
                names.join(", ")
            )
        };
        sink.report(SpecErrorKind::UnknownReference, &up, Target::Value, msg);
        return;
    };
    let ep = p.field("endpoint");
    if !db.engine.endpoints().contains(&endpoint) && !sink.is_poisoned(&ep) {
        let valid: Vec<&str> = db.engine.endpoints().iter().map(|e| e.as_str()).collect();
        sink.report(
            SpecErrorKind::InvalidValue,
            &ep,
            Target::Value,
            format!(
                "database `{url}` ({}) has no `{endpoint}` endpoint (endpoints: {})",
                db.engine.product(),
                valid.join(", ")
            ),
        );
    }
    let userp = p.field("user");
    let db_path = databases_path.key(url);
    if let Some(user) = user {
        if !sink.is_poisoned(&userp)
            && !sink.is_poisoned(&db_path.field("users"))
            && !db.users.iter().any(|u| u == user)
        {
            sink.report(
                SpecErrorKind::UnknownReference,
                &userp,
                Target::Value,
                format!(
                    "`{}` is not a user of database `{url}`{} (users: {})",
                    user.escape_debug(),
                    suggestion_suffix(user, db.users.iter().map(String::as_str)),
                    db.users.join(", ")
                ),
            );
        }
    }
}

/// Names PostgreSQL or holdfast keep for themselves.
const RESERVED_PG_NAMES: [&str; 3] = ["postgres", "template0", "template1"];
/// holdfast's own roles: its superuser and its replication role.
const HOLDFAST_ROLES: [&str; 2] = ["holdfast", "holdfast_replication"];

/// Why `name` cannot be a database or user name: an unquoted PostgreSQL identifier
/// (`^[a-z_][a-z0-9_]{0,62}$`) that is not reserved.
pub(crate) fn pg_name_problem(what: &str, name: &str) -> Option<String> {
    let shown = name.escape_debug();
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !first_ok || !rest_ok || name.len() > 63 {
        return Some(format!(
            "{what} `{shown}` is not a valid PostgreSQL name: use lowercase letters, digits and '_', not starting with a digit, at most 63 characters, e.g. `{}`",
            suggest_pg_name(name)
        ));
    }
    if RESERVED_PG_NAMES.contains(&name) {
        return Some(format!("{what} `{shown}` is reserved by PostgreSQL; choose another name"));
    }
    if name.starts_with("pg_") {
        return Some(format!("{what} `{shown}` starts with `pg_`, which PostgreSQL keeps for system names"));
    }
    if HOLDFAST_ROLES.contains(&name) {
        return Some(format!("{what} `{shown}` is reserved for holdfast's own superuser and replication roles"));
    }
    None
}

/// A valid spelling close to `name`, for examples in messages.
fn suggest_pg_name(name: &str) -> String {
    let mut out: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).take(63).collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
        out.truncate(63);
    }
    out
}

/// A `databases.<name>` entry: its name against services, ranges, PostgreSQL names,
/// parameters, paths, placement and resources.
fn validate_database(stack: &Stack, name: &str, db: &DatabaseSpec, dp: &FieldPath, sink: &mut dyn Sink) {
    if sink.is_poisoned(dp) {
        return;
    }
    let name_problem = dns_label_problem("database name", name);
    if let Some(msg) = &name_problem {
        sink.report(SpecErrorKind::InvalidValue, dp, Target::Key, msg.clone());
    } else {
        let endpoints: Vec<String> =
            db.engine.endpoints().iter().map(|e| db.engine.endpoint_name(name, *e)).filter(|n| n != name).collect();
        if stack.services.contains_key(name) {
            sink.report(
                SpecErrorKind::Duplicate,
                dp,
                Target::Key,
                format!("database `{name}` has the same name as service `{name}`; rename one (both are DNS names of the project)"),
            );
        }
        let quoted: Vec<String> = endpoints.iter().map(|e| format!("`{e}`")).collect();
        let reserved = format!("{} are the database's endpoints", quoted.join(", "));
        for endpoint in &endpoints {
            if stack.services.contains_key(endpoint) {
                sink.report(
                    SpecErrorKind::Duplicate,
                    dp,
                    Target::Key,
                    format!("service `{endpoint}` clashes with database `{name}`: {reserved}; rename the service"),
                );
            }
            if stack.databases.contains_key(endpoint) {
                sink.report(
                    SpecErrorKind::Duplicate,
                    dp,
                    Target::Key,
                    format!("database `{endpoint}` clashes with database `{name}`: {reserved}; rename one"),
                );
            }
        }
    }

    let instances = dp.field("instances");
    let instances_ok = !sink.is_poisoned(&instances);
    if instances_ok && !(1..=MAX_DB_INSTANCES).contains(&db.instances) {
        sink.report(
            SpecErrorKind::InvalidValue,
            &instances,
            Target::Value,
            format!("instances must be between 1 and {MAX_DB_INSTANCES}, found {}", db.instances),
        );
    } else if instances_ok && db.engine == DbEngine::Redis && db.sync > db.instances - 1 {
        sink.report(
            SpecErrorKind::InvalidValue,
            &dp.field("durability"),
            Target::Value,
            format!(
                "durability: replicated acknowledges a write once a replica has it, but instances: {} has no replica; raise instances to at least 2 or use durability: none",
                db.instances
            ),
        );
    } else if instances_ok && !sink.is_poisoned(&dp.field("sync")) && db.sync > db.instances - 1 {
        let standbys = db.instances - 1;
        let plural = if standbys == 1 { "standby" } else { "standbys" };
        sink.report(
            SpecErrorKind::InvalidValue,
            &dp.field("sync"),
            Target::Value,
            format!(
                "sync {} waits for {} standbys, but instances: {} has {standbys} {plural} (one member is the primary); lower sync or raise instances",
                db.sync, db.sync, db.instances
            ),
        );
    }

    if db.engine == DbEngine::Redis {
        validate_redis(db, dp, sink);
    } else if db.redis.is_some() {
        sink.report(
            SpecErrorKind::InvalidValue,
            &dp.field("redis"),
            Target::Key,
            "Redis settings on a PostgreSQL database; remove them or use `engine: redis`".to_string(),
        );
    }
    let pg_lists: &[(&str, &str, &Vec<String>)] = if db.engine == DbEngine::Postgres {
        &[("databases", "database", &db.databases), ("users", "user", &db.users)]
    } else {
        &[]
    };
    for &(field, what, list) in pg_lists {
        let lp = dp.field(field);
        if sink.is_poisoned(&lp) {
            continue;
        }
        if list.is_empty() {
            sink.report(
                SpecErrorKind::InvalidValue,
                &lp,
                Target::Value,
                format!("at least one {what} is needed, e.g. `[{}]`", suggest_pg_name(name)),
            );
        }
        for (i, item) in list.iter().enumerate() {
            let ip = lp.index(i);
            if sink.is_poisoned(&ip) {
                continue;
            }
            if let Some(msg) = pg_name_problem(&format!("{what} name"), item) {
                // Not said twice: a default made from a bad database name (that name is
                // already reported), or a user that is also a database (reported there).
                let defaulted = name_problem.is_some() && *item == name.replace('-', "_");
                let said = field == "users" && db.databases.contains(item);
                if !defaulted && !said {
                    sink.report(SpecErrorKind::InvalidValue, &ip, Target::Value, msg);
                }
            } else if let Some(first) = list[..i].iter().position(|o| o == item) {
                let first = sink.describe(&lp.index(first));
                sink.report(
                    SpecErrorKind::Duplicate,
                    &ip,
                    Target::Value,
                    format!("`{item}` is listed twice (first at {first}); remove one"),
                );
            }
        }
    }

    let pp = dp.field("parameters");
    if !sink.is_poisoned(&pp) {
        for (key, value) in &db.parameters {
            let p = pp.key(key);
            if sink.is_poisoned(&p) {
                continue;
            }
            match classify(key) {
                ParamKind::Known | ParamKind::Extension => {}
                ParamKind::Managed => sink.report(
                    SpecErrorKind::InvalidValue,
                    &p,
                    Target::Key,
                    format!(
                        "`{key}` is managed by holdfast (it sets addresses, files and replication itself); remove it"
                    ),
                ),
                ParamKind::Unknown => sink.report(
                    SpecErrorKind::UnknownField,
                    &p,
                    Target::Key,
                    format!(
                        "unknown PostgreSQL 15 parameter `{}`{} (extension settings are written `extension.name`)",
                        key.escape_debug(),
                        suggestion_suffix(key, PG_KNOWN.iter().copied())
                    ),
                ),
            }
            let problem = if value.is_empty() {
                Some(format!("the value of `{key}` is empty: give one, or leave the parameter out"))
            } else if value.chars().any(|c| c.is_control()) {
                Some(format!("the value of `{key}` must be one line, without control characters"))
            } else if value.contains('\'') {
                Some(format!("the value of `{key}` cannot contain `'` (holdfast writes each value quoted)"))
            } else {
                None
            };
            if let Some(msg) = problem {
                sink.report(SpecErrorKind::InvalidValue, &p, Target::Value, msg);
            }
        }
    }

    let bin = dp.field("bin_dir");
    if let Some(dir) = &db.bin_dir {
        if !sink.is_poisoned(&bin) {
            let shown = dir.display().to_string();
            if !dir.is_absolute() || shown.contains('\0') {
                sink.report(
                    SpecErrorKind::InvalidValue,
                    &bin,
                    Target::Value,
                    format!(
                        "bin_dir `{}` must be an absolute path, e.g. `{}`",
                        shown.escape_debug(),
                        if db.engine == DbEngine::Redis { "/usr/bin" } else { "/usr/lib/postgresql/15/bin" }
                    ),
                );
            }
        }
    }

    let placement = dp.field("placement");
    if !sink.is_poisoned(&placement) {
        validate_node_selector(&db.placement, &placement, sink);
        let anti = placement.field("anti_affinity");
        if !db.placement.anti_affinity.is_empty() && !sink.is_poisoned(&anti) {
            sink.report(
                SpecErrorKind::InvalidValue,
                &anti,
                Target::Value,
                "anti_affinity is not supported for databases (members of one database never share a node anyway); remove it".to_string(),
            );
        }
    }
    validate_resources(&db.resources, &dp.field("resources"), sink);
}

/// A Redis database as the API carries it: no PostgreSQL lists or parameters, its one
/// `default` user, its options present (the loader reports YAML mistakes itself, with
/// positions; these catch a hand-made or mixed-up canonical spec).
fn validate_redis(db: &DatabaseSpec, dp: &FieldPath, sink: &mut dyn Sink) {
    let mut problem = |field: &'static str, msg: String| {
        let p = dp.field(field);
        if !sink.is_poisoned(&p) {
            sink.report(SpecErrorKind::InvalidValue, &p, Target::Value, msg);
        }
    };
    if !db.databases.is_empty() {
        problem("databases", "a Redis database has no `databases` list; remove it".into());
    }
    if db.users != [REDIS_DEFAULT_USER] {
        problem("users", format!("a Redis database has one user, `{REDIS_DEFAULT_USER}`; remove `users`"));
    }
    if !db.parameters.is_empty() {
        problem("parameters", "a Redis database takes no PostgreSQL `parameters`; remove them".into());
    }
    if db.on_sync_loss != SyncLoss::Block {
        problem("on_sync_loss", "`on_sync_loss` is a PostgreSQL setting; remove it".into());
    }
    if db.sync > 1 {
        problem("durability", format!("durability is none or replicated (sync 0 or 1), found sync {}", db.sync));
    }
    if db.redis.as_ref().is_some_and(|r| r.maxmemory == Some(0)) {
        problem("maxmemory", "maxmemory 0 would mean no limit in Redis; leave it out instead".into());
    }
}

/// Why `path` is not a usable URL path (prefix).
fn url_path_problem(what: &str, path: &str) -> Option<String> {
    let shown = path.escape_debug();
    if !path.starts_with('/') {
        Some(format!("{what} `{shown}` must start with `/`, e.g. `/{}`", path.trim_start_matches('/').escape_debug()))
    } else if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some(format!("{what} `{shown}` cannot contain spaces or control characters (percent-encode them, e.g. `%20`)"))
    } else if path.contains(['?', '#']) {
        Some(format!("{what} `{shown}` cannot contain `?` or `#`: give only the path"))
    } else {
        None
    }
}

fn validate_routes(stack: &Stack, sink: &mut dyn Sink) {
    let routes_path = FieldPath::root().field("routes");
    let services_path = FieldPath::root().field("services");
    let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, route) in stack.routes.iter().enumerate() {
        let rp = routes_path.index(i);
        if sink.is_poisoned(&rp) {
            continue;
        }
        let host = rp.field("host");
        let host_ok = !sink.is_poisoned(&host);
        if host_ok {
            if let Some(msg) = host_problem(&route.host) {
                sink.report(SpecErrorKind::InvalidValue, &host, Target::Value, msg);
            }
        }
        let path = rp.field("path");
        let path_ok = !sink.is_poisoned(&path);
        if path_ok {
            if let Some(msg) = url_path_problem("route path", &route.path) {
                sink.report(SpecErrorKind::InvalidValue, &path, Target::Value, msg);
            }
        }
        if host_ok && path_ok {
            match seen.get(&(route.host.as_str(), route.path.as_str())) {
                Some(first) => {
                    let first = sink.describe(&routes_path.index(*first));
                    sink.report(
                        SpecErrorKind::Duplicate,
                        &rp,
                        Target::Value,
                        format!(
                            "duplicate route: host `{}` path `{}` is already routed by {first}",
                            route.host, route.path
                        ),
                    );
                }
                None => {
                    seen.insert((route.host.as_str(), route.path.as_str()), i);
                }
            }
        }

        validate_route_edge(stack, route, &rp, host_ok, sink);

        let service = rp.field("service");
        if sink.is_poisoned(&service) {
            continue;
        }
        let Some(svc) = stack.services.get(&route.service) else {
            let names = in_declared_order(sink, &services_path, stack.services.keys());
            let msg = if names.is_empty() {
                format!("route to unknown service `{}`: no services are defined", route.service)
            } else {
                format!(
                    "route to unknown service `{}`{} (services: {})",
                    route.service,
                    suggestion_suffix(&route.service, names.iter().copied()),
                    names.join(", ")
                )
            };
            sink.report(SpecErrorKind::UnknownReference, &service, Target::Value, msg);
            continue;
        };
        let svc_path = services_path.key(&route.service);
        let port = rp.field("port");
        if sink.is_poisoned(&svc_path) || sink.is_poisoned(&svc_path.field("ports")) {
            continue;
        }
        if route.port.is_empty() && !sink.is_poisoned(&port) {
            let declared = in_declared_order(sink, &svc_path.field("ports"), svc.ports.keys());
            let msg = if declared.is_empty() {
                format!(
                    "service `{}` declares no ports, so nothing can be routed to it: add one under `ports:` in the service",
                    route.service
                )
            } else {
                format!(
                    "missing `port`: service `{}` has several ports ({}); choose one with `port:`",
                    route.service,
                    declared.join(", ")
                )
            };
            sink.report(SpecErrorKind::MissingField, &port, Target::Value, msg);
        } else {
            port_reference(&route.service, svc, &route.port, &svc_path, &port, sink);
        }
    }
}

/// A route's edge options: `tls` (declared secrets; `auto` only for a plain host),
/// `https_redirect` (needs `tls`) and `timeout`.
fn validate_route_edge(stack: &Stack, route: &RouteSpec, rp: &FieldPath, host_ok: bool, sink: &mut dyn Sink) {
    let tls = rp.field("tls");
    if !sink.is_poisoned(&tls) {
        match &route.tls {
            RouteTls::None => {
                let redirect = rp.field("https_redirect");
                if route.https_redirect && !sink.is_poisoned(&redirect) {
                    sink.report(
                        SpecErrorKind::InvalidValue,
                        &redirect,
                        Target::Value,
                        "redirecting to HTTPS needs a certificate: add `tls: auto` or `tls: { cert: <secret>, key: <secret> }` to this route, or remove `https_redirect`".to_string(),
                    );
                }
            }
            RouteTls::Auto => {
                if host_ok && route.host.starts_with("*.") {
                    sink.report(
                        SpecErrorKind::InvalidValue,
                        &tls,
                        Target::Value,
                        format!(
                            "`tls: auto` cannot serve wildcard host `{}`: ACME HTTP-01 cannot issue wildcard names; give a certificate and key from the project's secrets instead, `tls: {{ cert: <secret>, key: <secret> }}`",
                            route.host
                        ),
                    );
                }
            }
            RouteTls::Secrets { cert, key } => {
                validate_secret_ref(stack, cert, &tls.field("cert"), sink);
                validate_secret_ref(stack, key, &tls.field("key"), sink);
            }
        }
    }
    let timeout = rp.field("timeout");
    if let Some(ms) = route.timeout_ms {
        if !sink.is_poisoned(&timeout) && !(1..=MAX_ROUTE_TIMEOUT_MS).contains(&ms) {
            sink.report(
                SpecErrorKind::InvalidValue,
                &timeout,
                Target::Value,
                format!(
                    "timeout must be between 1ms and {}, found {}",
                    format_duration_ms(MAX_ROUTE_TIMEOUT_MS),
                    format_duration_ms(ms)
                ),
            );
        }
    }
}

/// The route (index) that serves `name` (absolute, lowercase): its host is `name`, or a
/// wildcard `*.suffix` with `name` below `suffix`, as the edge matches hosts.
fn routed_by(stack: &Stack, name: &str, sink: &dyn Sink) -> Option<usize> {
    let routes_path = FieldPath::root().field("routes");
    stack.routes.iter().enumerate().find_map(|(k, route)| {
        let rp = routes_path.index(k);
        if sink.is_poisoned(&rp) || sink.is_poisoned(&rp.field("host")) {
            return None;
        }
        let matches = route.host == name
            || route.host.strip_prefix("*.").is_some_and(|suffix| {
                name.strip_suffix(suffix).and_then(|below| below.strip_suffix('.')).is_some_and(|b| !b.is_empty())
            });
        matches.then_some(k)
    })
}

/// `dns.zones`: names (valid, distinct, none inside another), TTLs and every zone's
/// records.
fn validate_zones(stack: &Stack, sink: &mut dyn Sink) {
    let zones_path = FieldPath::root().field("dns").field("zones");
    let mut first_of: HashMap<&str, usize> = HashMap::new();
    let mut named: Vec<(usize, &str)> = Vec::new();
    for (i, zone) in stack.zones.iter().enumerate() {
        let zp = zones_path.index(i);
        if sink.is_poisoned(&zp) {
            continue;
        }
        let name_p = zp.field("name");
        let mut name_ok = !sink.is_poisoned(&name_p);
        if name_ok {
            if let Some(msg) = zone_name_problem(&zone.name) {
                sink.report(SpecErrorKind::InvalidValue, &name_p, Target::Value, msg);
                name_ok = false;
            }
        }
        if name_ok {
            match first_of.get(zone.name.as_str()) {
                Some(first) => {
                    let first = sink.describe(&zones_path.index(*first));
                    sink.report(
                        SpecErrorKind::Duplicate,
                        &name_p,
                        Target::Value,
                        format!(
                            "zone `{}` is declared twice (first at {first}); give all its records in one zone",
                            zone.name
                        ),
                    );
                }
                None => {
                    first_of.insert(&zone.name, i);
                    named.push((i, &zone.name));
                }
            }
        }
        let ttl = zp.field("ttl");
        if !sink.is_poisoned(&ttl) {
            if let Some(msg) = ttl_problem(zone.ttl) {
                sink.report(SpecErrorKind::InvalidValue, &ttl, Target::Value, msg);
            }
        }
        validate_records(stack, zone, &zp, name_ok, sink);
    }
    for &(i, inner) in &named {
        let outer = named.iter().find(|(j, outer)| *j != i && inner.ends_with(&format!(".{outer}")));
        if let Some(&(j, outer)) = outer {
            let first = sink.describe(&zones_path.index(j));
            let rel = inner.strip_suffix(&format!(".{outer}")).unwrap_or(inner);
            sink.report(
                SpecErrorKind::InvalidValue,
                &zones_path.index(i).field("name"),
                Target::Value,
                format!(
                    "zone `{inner}` is inside zone `{outer}` ({first}); put its records in `{outer}` instead, with names relative to it such as `www.{rel}`"
                ),
            );
        }
    }
}

/// The records of one zone: names, values (canonical), TTLs, CNAMEs alone at their name
/// and never at the apex, and no addresses for a name the routes serve (`zone_ok`: the
/// zone's name is valid).
fn validate_records(stack: &Stack, zone: &ZoneSpec, zp: &FieldPath, zone_ok: bool, sink: &mut dyn Sink) {
    let records_path = zp.field("records");
    if sink.is_poisoned(&records_path) {
        return;
    }
    let zone_name = if zone_ok { zone.name.as_str() } else { "" };
    let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
    for (j, record) in zone.records.iter().enumerate() {
        let rp = records_path.index(j);
        if sink.is_poisoned(&rp) {
            continue;
        }
        let name_p = rp.field("name");
        let type_p = rp.field("type");
        let value_p = rp.field("value");
        let mut name_ok = !sink.is_poisoned(&name_p);
        if name_ok {
            if let Some(msg) = record_name_problem(zone_name, &record.name) {
                sink.report(SpecErrorKind::InvalidValue, &name_p, Target::Value, msg);
                name_ok = false;
            }
        }
        let type_ok = !sink.is_poisoned(&type_p);
        if type_ok && !sink.is_poisoned(&value_p) {
            match canonical_value(zone_name, record.rtype, &record.value) {
                Err(msg) => sink.report(SpecErrorKind::InvalidValue, &value_p, Target::Value, msg),
                Ok(canonical) if canonical != record.value => sink.report(
                    SpecErrorKind::InvalidValue,
                    &value_p,
                    Target::Value,
                    format!(
                        "record value `{}` is not in canonical form; write `{}`",
                        record.value.escape_debug(),
                        canonical.escape_debug()
                    ),
                ),
                Ok(_) => {}
            }
        }
        let ttl = rp.field("ttl");
        if let Some(t) = record.ttl {
            if !sink.is_poisoned(&ttl) {
                if let Some(msg) = ttl_problem(t) {
                    sink.report(SpecErrorKind::InvalidValue, &ttl, Target::Value, msg);
                }
            }
        }
        if !(name_ok && type_ok) {
            continue;
        }
        let shown = if record.name == "@" { "the apex `@`".to_string() } else { format!("`{}`", record.name) };
        let earlier = by_name.entry(&record.name).or_default();
        if record.rtype == RecordType::Cname && record.name == "@" {
            sink.report(
                SpecErrorKind::InvalidValue,
                &type_p,
                Target::Value,
                "a CNAME cannot be at the zone's apex `@` (the apex has the zone's own SOA and NS records, and a CNAME must be alone at its name); give the apex A or AAAA records, or put the CNAME on a name such as `www`".to_string(),
            );
        } else if record.rtype == RecordType::Cname && !earlier.is_empty() {
            let k = earlier[0];
            let other = zone.records[k].rtype;
            let article = if matches!(other, RecordType::A | RecordType::Aaaa | RecordType::Mx | RecordType::Srv) {
                "an"
            } else {
                "a"
            };
            let first = sink.describe(&records_path.index(k));
            sink.report(
                SpecErrorKind::InvalidValue,
                &name_p,
                Target::Value,
                format!(
                    "a CNAME must be the only record at its name, but {shown} already has {article} {other} record ({first}); remove one, or use another name"
                ),
            );
        } else if let Some(&k) = earlier.iter().find(|k| zone.records[**k].rtype == RecordType::Cname) {
            let first = sink.describe(&records_path.index(k));
            sink.report(
                SpecErrorKind::InvalidValue,
                &name_p,
                Target::Value,
                format!(
                    "{shown} has a CNAME record ({first}), which must be the only record at its name; remove one, or use another name"
                ),
            );
        }
        earlier.push(j);
        let addresses = matches!(record.rtype, RecordType::A | RecordType::Aaaa | RecordType::Cname);
        if zone_ok && addresses {
            let full = full_name(&zone.name, &record.name);
            if let Some(k) = routed_by(stack, &full, sink) {
                let route = sink.describe(&FieldPath::root().field("routes").index(k));
                sink.report(
                    SpecErrorKind::InvalidValue,
                    &name_p,
                    Target::Value,
                    format!(
                        "`{full}` is routed by {route}: its addresses are the edge nodes', which holdfast gives itself; remove this {} record",
                        record.rtype
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_paths() {
        assert!(url_path_problem("p", "/").is_none());
        assert!(url_path_problem("p", "/api/v1").is_none());
        assert!(url_path_problem("p", "api").is_some());
        assert!(url_path_problem("p", "/a b").is_some());
        assert!(url_path_problem("p", "/a?b").is_some());
    }

    #[test]
    fn port_env_names() {
        assert_eq!(port_env_name("http"), "PORT_HTTP");
        assert_eq!(port_env_name("admin-http"), "PORT_ADMIN_HTTP");
    }
}
