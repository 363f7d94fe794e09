//! The loader: converts parsed YAML documents (possibly many files, each
//! possibly with several `---` documents) into one canonical [`Stack`],
//! collecting every structural problem (wrong types, unknown or missing
//! fields, bad units) with its exact position, merging files (a service or a
//! conflicting `project` defined twice is an error naming both places), and
//! then running the semantic rules of [`crate::validate`] with positions.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use crate::dns::{canonical_value, ttl_range_message};
use crate::error::{LineCol, SpecError, SpecErrorKind, SpecErrors};
use crate::model::{
    Concurrency, DatabaseSpec, DbEndpoint, DbEngine, EnvValue, FileSource, JobSpec, Persistence, SecretSpec, SyncLoss,
    DEFAULT_DB_INSTANCES, MAX_DB_INSTANCES, MAX_JOB_RETRIES,
};
use crate::model::{
    HealthCheck, HealthSpec, PlacementSpec, Resources, RestartPolicy, RouteSpec, RunCommand, ServiceSpec, Spread,
    Stack, StopSignal, StopSpec, DEFAULT_HEALTHY_THRESHOLD, DEFAULT_HEALTH_TIMEOUT_MS, DEFAULT_PROJECT,
    DEFAULT_REPLICAS, DEFAULT_ROUTE_PATH, DEFAULT_START_GRACE_MS, DEFAULT_STOP_GRACE_MS, DEFAULT_UNHEALTHY_THRESHOLD,
    MAX_REPLICAS,
};
use crate::model::{RecordSpec, RecordType, RouteTls, ZoneSpec, DEFAULT_ZONE_TTL};
use crate::names::normalise_host;
use crate::path::{FieldPath, Seg};
use crate::suggest::suggestion_suffix;
use crate::units::{parse_cpu_millis, parse_duration_ms, parse_memory_bytes};
use crate::validate::{validate_stack, PositionKey, Sink, Target};
use crate::yaml::{parse_documents, Kind, Node};

/// The fields of one kind of mapping, and where misplaced fields belong.
struct FieldSet {
    names: &'static [&'static str],
    /// (where it belongs, fields that belong there)
    hints: &'static [(&'static str, &'static [&'static str])],
}

const SERVICE_FIELDS: &[&str] = &[
    "run",
    "image",
    "replicas",
    "workdir",
    "env",
    "files",
    "ports",
    "health",
    "resources",
    "restart",
    "stop",
    "placement",
];
const HEALTH_FIELDS: &[&str] =
    &["http", "tcp", "exec", "interval", "timeout", "healthy_threshold", "unhealthy_threshold", "start_grace"];
const RESOURCE_FIELDS: &[&str] = &["cpu", "memory"];
const STOP_FIELDS: &[&str] = &["signal", "grace"];
const ROUTE_FIELDS: &[&str] = &["host", "path", "service", "port", "tls", "https_redirect", "timeout"];
const PLACEMENT_FIELDS: &[&str] = &["node_selector", "spread", "anti_affinity"];
const DATABASE_FIELDS: &[&str] = &[
    "engine",
    "instances",
    "sync",
    "on_sync_loss",
    "databases",
    "users",
    "parameters",
    "bin_dir",
    "placement",
    "resources",
    "persistence",
    "maxmemory",
    "durability",
];
/// Fields only a PostgreSQL database takes.
const POSTGRES_ONLY: &[&str] = &["sync", "on_sync_loss", "databases", "users", "parameters"];
/// Fields only a Redis database takes.
const REDIS_ONLY: &[&str] = &["persistence", "maxmemory", "durability"];

const TOP: FieldSet = FieldSet {
    names: &["project", "services", "routes", "databases", "secrets", "jobs", "dns"],
    hints: &[
        ("a service, under `services.<name>`", SERVICE_FIELDS),
        ("a route, in the `routes:` list", ROUTE_FIELDS),
        ("a database, under `databases.<name>`", DATABASE_FIELDS),
        ("`dns`, as `dns: { zones: [...] }`", &["zones"]),
    ],
};
const ZONE_FIELDS: &[&str] = &["name", "ttl", "records"];
const RECORD_FIELDS: &[&str] = &["name", "type", "value", "ttl"];
const DNS: FieldSet = FieldSet { names: &["zones"], hints: &[("a zone, in the `dns.zones:` list", ZONE_FIELDS)] };
const ZONE: FieldSet =
    FieldSet { names: ZONE_FIELDS, hints: &[("a record, in the zone's `records:` list", RECORD_FIELDS)] };
const RECORD: FieldSet = FieldSet { names: RECORD_FIELDS, hints: &[] };
const ROUTE_TLS: FieldSet = FieldSet { names: &["cert", "key"], hints: &[] };
/// The two forms of a route's `tls`, for messages.
const TLS_FORMS: &str = "`auto` = a certificate the cluster obtains and renews with ACME, or `{ cert: <secret>, key: <secret> }` = a PEM certificate chain and its private key from two secrets declared under `secrets:`";
const DATABASE: FieldSet =
    FieldSet { names: DATABASE_FIELDS, hints: &[("`resources`", RESOURCE_FIELDS), ("`placement`", PLACEMENT_FIELDS)] };
const ENV_URL: FieldSet = FieldSet { names: &["url", "endpoint", "user"], hints: &[] };
const JOB_FIELDS: &[&str] = &[
    "run",
    "env",
    "files",
    "workdir",
    "resources",
    "node_selector",
    "schedule",
    "every",
    "secrets_write",
    "retries",
    "timeout",
    "concurrency",
];
const JOB: FieldSet = FieldSet { names: JOB_FIELDS, hints: &[("`resources`", RESOURCE_FIELDS)] };
const SECRET_REF: FieldSet = FieldSet { names: &["secret"], hints: &[] };
const SERVICE: FieldSet = FieldSet {
    names: SERVICE_FIELDS,
    hints: &[
        ("`health`", HEALTH_FIELDS),
        ("`resources`", RESOURCE_FIELDS),
        ("`stop`", STOP_FIELDS),
        ("`placement`", PLACEMENT_FIELDS),
        ("a route, in the top-level `routes:` list", ROUTE_FIELDS),
    ],
};
const HEALTH: FieldSet = FieldSet { names: HEALTH_FIELDS, hints: &[] };
const HTTP_CHECK: FieldSet = FieldSet { names: &["path", "port"], hints: &[] };
const TCP_CHECK: FieldSet = FieldSet { names: &["port"], hints: &[] };
const RESOURCES: FieldSet = FieldSet { names: RESOURCE_FIELDS, hints: &[] };
const STOP: FieldSet = FieldSet { names: STOP_FIELDS, hints: &[] };
const ROUTE: FieldSet = FieldSet { names: ROUTE_FIELDS, hints: &[] };
const PLACEMENT: FieldSet = FieldSet { names: PLACEMENT_FIELDS, hints: &[] };

const RUN_EXAMPLE: &str =
    "a list such as `[\"my-server\", \"--port\", \"8080\"]` or a shell string such as `\"python3 -m http.server $PORT\"`";

/// Where a node is, for errors found after parsing.
#[derive(Debug, Clone)]
struct Loc {
    file: usize,
    key: Option<LineCol>,
    value: Option<LineCol>,
    /// The path as the user sees it (route indices local to the document).
    display: FieldPath,
}

/// The fields found in one mapping: (field, key node, value node).
struct Fields<'n>(Vec<(&'static str, &'n Node, &'n Node)>);

impl<'n> Fields<'n> {
    fn get(&self, name: &str) -> Option<(&'n Node, &'n Node)> {
        self.0.iter().find(|(n, _, _)| *n == name).map(|(_, k, v)| (*k, *v))
    }
}

/// Accumulates sources and builds the [`Stack`].
#[derive(Default)]
pub(crate) struct Loader {
    files: Vec<String>,
    errors: Vec<(usize, SpecError)>,
    positions: HashMap<FieldPath, Loc>,
    poisoned: Vec<FieldPath>,
    project: Option<(String, usize, Option<LineCol>)>,
    services: BTreeMap<String, ServiceSpec>,
    service_at: HashMap<String, (usize, Option<LineCol>)>,
    routes: Vec<RouteSpec>,
    route_port_omitted: Vec<bool>,
    zones: Vec<ZoneSpec>,
    databases: BTreeMap<String, DatabaseSpec>,
    database_at: HashMap<String, (usize, Option<LineCol>)>,
    secrets: BTreeMap<String, SecretSpec>,
    secret_at: HashMap<String, (usize, Option<LineCol>)>,
    jobs: BTreeMap<String, JobSpec>,
    job_at: HashMap<String, (usize, Option<LineCol>)>,
}

fn at(file: &str, pos: Option<LineCol>) -> String {
    match pos {
        Some(p) => format!("{file}:{p}"),
        None => file.to_string(),
    }
}

impl Loader {
    pub(crate) fn new() -> Self {
        Loader::default()
    }

    fn add_file(&mut self, name: &str) -> usize {
        self.files.push(name.to_string());
        self.files.len() - 1
    }

    /// Records that a spec file could not be read.
    pub(crate) fn add_io_error(&mut self, name: &str, err: &std::io::Error) {
        let file = self.add_file(name);
        self.errors.push((
            file,
            SpecError {
                kind: SpecErrorKind::Io,
                file: Some(name.to_string()),
                pos: None,
                path: String::new(),
                message: format!("cannot read spec file: {err}"),
            },
        ));
    }

    /// Parses one source and merges it in.
    pub(crate) fn add_source(&mut self, name: &str, text: &str) {
        let file = self.add_file(name);
        match parse_documents(text) {
            Ok(docs) => {
                for node in &docs {
                    let route_base = self.routes.len();
                    let zone_base = self.zones.len();
                    let mut doc = Doc { loader: self, file, route_base, zone_base, record: true };
                    doc.document(node);
                }
            }
            Err(e) => {
                // `name: @` (a record at a zone's apex) is the likely way to meet YAML's
                // reserved `@`.
                let found = e.pos.and_then(|p| {
                    text.lines()
                        .nth(usize::try_from(p.line).ok()?.checked_sub(1)?)?
                        .chars()
                        .nth(usize::try_from(p.column).ok()?.checked_sub(1)?)
                });
                let hint = if found == Some('@') {
                    " (YAML does not let a plain value start with `@`: quote it, e.g. `name: \"@\"` for a zone's apex)"
                } else {
                    ""
                };
                self.errors.push((
                    file,
                    SpecError {
                        kind: SpecErrorKind::Syntax,
                        file: Some(name.to_string()),
                        pos: e.pos,
                        path: String::new(),
                        message: format!("invalid YAML: {}{hint}", e.message),
                    },
                ))
            }
        }
    }

    /// Merges, validates, and returns the stack or every error found.
    pub(crate) fn finish(mut self) -> Result<Stack, SpecErrors> {
        // A route may leave out `port` when its service has exactly one.
        for (i, route) in self.routes.iter_mut().enumerate() {
            if self.route_port_omitted.get(i).copied().unwrap_or(false) {
                if let Some(svc) = self.services.get(&route.service) {
                    if svc.ports.len() == 1 {
                        if let Some(name) = svc.ports.keys().next() {
                            route.port = name.clone();
                        }
                    }
                }
            }
        }
        let stack = Stack {
            project: self.project.as_ref().map(|(p, _, _)| p.clone()).unwrap_or_else(|| DEFAULT_PROJECT.to_string()),
            services: std::mem::take(&mut self.services),
            routes: std::mem::take(&mut self.routes),
            databases: std::mem::take(&mut self.databases),
            secrets: std::mem::take(&mut self.secrets),
            jobs: std::mem::take(&mut self.jobs),
            zones: std::mem::take(&mut self.zones),
        };
        let mut sink = LoaderSink {
            positions: &self.positions,
            poisoned: &self.poisoned,
            files: &self.files,
            errors: &mut self.errors,
        };
        validate_stack(&stack, &mut sink);
        if self.errors.is_empty() {
            return Ok(stack);
        }
        let mut errors = std::mem::take(&mut self.errors);
        errors.sort_by_key(|(file, e)| (*file, e.pos.map(|p| (p.line, p.column))));
        Err(SpecErrors(errors.into_iter().map(|(_, e)| e).collect()))
    }
}

/// Reports validation errors with the positions the loader recorded.
struct LoaderSink<'a> {
    positions: &'a HashMap<FieldPath, Loc>,
    poisoned: &'a [FieldPath],
    files: &'a [String],
    errors: &'a mut Vec<(usize, SpecError)>,
}

impl LoaderSink<'_> {
    /// The recorded node nearest to `path` (itself or an ancestor), and how
    /// many segments of `path` it covers.
    fn lookup(&self, path: &FieldPath) -> Option<(&Loc, usize)> {
        let segs = path.segs();
        (1..=segs.len()).rev().find_map(|n| self.positions.get(&FieldPath::from_segs(&segs[..n])).map(|loc| (loc, n)))
    }

    fn display(loc: &Loc, rest: &[Seg]) -> FieldPath {
        let mut segs = loc.display.segs().to_vec();
        segs.extend_from_slice(rest);
        FieldPath::from_segs(&segs)
    }
}

impl Sink for LoaderSink<'_> {
    fn is_poisoned(&self, path: &FieldPath) -> bool {
        self.poisoned.iter().any(|p| path.starts_with(p))
    }

    fn report(&mut self, kind: SpecErrorKind, path: &FieldPath, target: Target, message: String) {
        let segs = path.segs();
        match self.lookup(path) {
            Some((loc, n)) => {
                let pos = if n == segs.len() && target == Target::Value {
                    loc.value.or(loc.key)
                } else {
                    loc.key.or(loc.value)
                };
                let display = Self::display(loc, &segs[n..]);
                let file = loc.file;
                self.errors.push((
                    file,
                    SpecError { kind, file: self.files.get(file).cloned(), pos, path: display.to_string(), message },
                ));
            }
            None => self.errors.push((usize::MAX, SpecError::new(kind, path.to_string(), message))),
        }
    }

    fn describe(&self, path: &FieldPath) -> String {
        match self.lookup(path) {
            Some((loc, n)) => {
                let display = Self::display(loc, &path.segs()[n..]);
                let file = self.files.get(loc.file).map(String::as_str).unwrap_or("");
                format!("{display} ({})", at(file, loc.value.or(loc.key)))
            }
            None => path.to_string(),
        }
    }

    fn position_key(&self, path: &FieldPath) -> Option<PositionKey> {
        let loc = self.positions.get(path)?;
        let p = loc.key.or(loc.value)?;
        Some((loc.file, p.line, p.column))
    }
}

/// Conversion of one YAML document.
struct Doc<'l> {
    loader: &'l mut Loader,
    file: usize,
    /// Number of routes before this document (route indices are local).
    route_base: usize,
    /// Number of zones before this document (`dns.zones` indices are local).
    zone_base: usize,
    /// False while converting a duplicate service that will be dropped.
    record: bool,
}

impl Doc<'_> {
    fn file_name(&self) -> String {
        self.loader.files.get(self.file).cloned().unwrap_or_default()
    }

    fn canon(&self, p: &FieldPath) -> FieldPath {
        match p.segs() {
            [Seg::Field("routes"), Seg::Index(i), rest @ ..] => {
                let mut segs = vec![Seg::Field("routes"), Seg::Index(i + self.route_base)];
                segs.extend_from_slice(rest);
                FieldPath::from_segs(&segs)
            }
            [Seg::Field("dns"), Seg::Field("zones"), Seg::Index(i), rest @ ..] => {
                let mut segs = vec![Seg::Field("dns"), Seg::Field("zones"), Seg::Index(i + self.zone_base)];
                segs.extend_from_slice(rest);
                FieldPath::from_segs(&segs)
            }
            _ => p.clone(),
        }
    }

    fn note(&mut self, p: &FieldPath, key: Option<LineCol>, value: Option<LineCol>) {
        if self.record {
            let loc = Loc { file: self.file, key, value, display: p.clone() };
            self.loader.positions.insert(self.canon(p), loc);
        }
    }

    fn poison(&mut self, p: &FieldPath) {
        if self.record {
            let c = self.canon(p);
            self.loader.poisoned.push(c);
        }
    }

    fn error(&mut self, kind: SpecErrorKind, p: &FieldPath, pos: Option<LineCol>, message: String) {
        let file = self.file_name();
        self.loader.errors.push((self.file, SpecError { kind, file: Some(file), pos, path: p.to_string(), message }));
    }

    /// Reports an error about the value at `p` and keeps rules away from it.
    fn fail(&mut self, kind: SpecErrorKind, p: &FieldPath, pos: Option<LineCol>, message: String) {
        self.error(kind, p, pos, message);
        self.poison(p);
    }

    fn wrong_type(&mut self, p: &FieldPath, node: &Node, expected: &str) {
        self.fail(SpecErrorKind::WrongType, p, node.pos, format!("expected {expected}, found {}", node.describe()));
    }

    fn first_at(&self, pos: Option<LineCol>) -> String {
        at(&self.file_name(), pos)
    }

    /// The fields of a mapping, reporting unknown and repeated ones. `None`
    /// (after reporting) if `node` is not a mapping; null counts as empty.
    fn fields<'n>(&mut self, node: &'n Node, p: &FieldPath, set: &FieldSet) -> Option<Fields<'n>> {
        let entries = match &node.kind {
            Kind::Map(entries) => entries,
            Kind::Null => return Some(Fields(Vec::new())),
            _ => {
                let expected = format!("a mapping with fields {}", set.names.join(", "));
                self.wrong_type(p, node, &expected);
                return None;
            }
        };
        let mut out: Vec<(&'static str, &'n Node, &'n Node)> = Vec::new();
        for (k, v) in entries {
            let Some(key) = k.scalar_text() else {
                self.error(
                    SpecErrorKind::WrongType,
                    p,
                    k.pos,
                    format!("expected a field name, found {}", k.describe()),
                );
                continue;
            };
            if key.starts_with("x-") {
                continue; // extension field, e.g. a home for YAML anchors
            }
            let Some(name) = set.names.iter().copied().find(|n| *n == key) else {
                let mut msg = format!("unknown field `{}`", key.escape_debug());
                let suggestion = suggestion_suffix(&key, set.names.iter().copied());
                if suggestion.is_empty() {
                    if let Some((place, _)) = set.hints.iter().find(|(_, fields)| fields.contains(&key.as_str())) {
                        msg.push_str(&format!(": `{key}` belongs in {place}"));
                    }
                } else {
                    msg.push_str(&suggestion);
                }
                msg.push_str(&format!(" (valid fields: {})", set.names.join(", ")));
                self.error(SpecErrorKind::UnknownField, p, k.pos, msg);
                continue;
            };
            if let Some((_, first, _)) = out.iter().find(|(n, _, _)| *n == name) {
                let msg = format!("field `{name}` is given twice (first at {}); remove one", self.first_at(first.pos));
                self.error(SpecErrorKind::Duplicate, &p.field(name), k.pos, msg);
                continue;
            }
            self.note(&p.field(name), k.pos, v.pos);
            out.push((name, k, v));
        }
        Some(Fields(out))
    }

    /// Entries of a mapping with user-chosen keys; repeated keys reported.
    fn entries<'n>(
        &mut self,
        node: &'n Node,
        p: &FieldPath,
        expected: &str,
        noun: &str,
    ) -> Option<Vec<(String, &'n Node, &'n Node)>> {
        let entries = match &node.kind {
            Kind::Map(entries) => entries,
            Kind::Null => return Some(Vec::new()),
            _ => {
                self.wrong_type(p, node, expected);
                return None;
            }
        };
        let mut out: Vec<(String, &'n Node, &'n Node)> = Vec::new();
        for (k, v) in entries {
            let Some(key) = k.scalar_text() else {
                self.error(
                    SpecErrorKind::WrongType,
                    p,
                    k.pos,
                    format!("expected a {noun} name, found {}", k.describe()),
                );
                continue;
            };
            if let Some((_, first, _)) = out.iter().find(|(n, _, _)| *n == key) {
                let msg =
                    format!("{noun} `{}` is defined twice (first at {})", key.escape_debug(), self.first_at(first.pos));
                self.error(SpecErrorKind::Duplicate, &p.key(&key), k.pos, msg);
                continue;
            }
            out.push((key, k, v));
        }
        Some(out)
    }

    fn string(&mut self, node: &Node, p: &FieldPath, expected: &str) -> Option<String> {
        let s = node.scalar_text();
        if s.is_none() {
            self.wrong_type(p, node, expected);
        }
        s
    }

    fn document(&mut self, node: &Node) {
        let root = FieldPath::root();
        let Some(f) = self.fields(node, &root, &TOP) else {
            return;
        };
        if let Some((_, v)) = f.get("project") {
            let p = root.field("project");
            if let Some(name) = self.string(v, &p, "a project name such as `demo`") {
                match self.loader.project.clone() {
                    Some((prev, file, pos)) if prev != name => {
                        let first = at(self.loader.files.get(file).map_or("", String::as_str), pos);
                        self.error(
                            SpecErrorKind::Duplicate,
                            &p,
                            v.pos,
                            format!(
                                "project `{}` conflicts with project `{prev}` set at {first}; all spec files must agree",
                                name.escape_debug()
                            ),
                        );
                    }
                    Some(_) => {}
                    None => self.loader.project = Some((name, self.file, v.pos)),
                }
            }
        }
        if let Some((_, v)) = f.get("services") {
            self.services(v, &root.field("services"));
        }
        if let Some((_, v)) = f.get("routes") {
            self.routes(v, &root.field("routes"));
        }
        if let Some((_, v)) = f.get("databases") {
            self.databases(v, &root.field("databases"));
        }
        if let Some((_, v)) = f.get("secrets") {
            self.secrets(v, &root.field("secrets"));
        }
        if let Some((_, v)) = f.get("jobs") {
            self.jobs(v, &root.field("jobs"));
        }
        if let Some((_, v)) = f.get("dns") {
            self.dns(v, &root.field("dns"));
        }
    }

    /// `dns: { zones: [...] }`.
    fn dns(&mut self, node: &Node, p: &FieldPath) {
        let Some(f) = self.fields(node, p, &DNS) else {
            return;
        };
        let Some((_, v)) = f.get("zones") else {
            return;
        };
        let zp = p.field("zones");
        let items = match &v.kind {
            Kind::Seq(items) => items,
            Kind::Null => return,
            _ => {
                self.wrong_type(&zp, v, "a list of zones, each item starting with `- name: example.com`");
                return;
            }
        };
        for (i, item) in items.iter().enumerate() {
            let ip = zp.index(i);
            self.note(&ip, None, item.pos);
            let zone = self.zone(item, &ip);
            self.loader.zones.push(zone);
        }
    }

    /// One zone, with placeholders where it is broken.
    fn zone(&mut self, node: &Node, zp: &FieldPath) -> ZoneSpec {
        let mut zone = ZoneSpec { name: String::new(), ttl: DEFAULT_ZONE_TTL, records: Vec::new() };
        let fields = match node.kind {
            Kind::Null => None,
            _ => self.fields(node, zp, &ZONE),
        };
        let Some(f) = fields else {
            if matches!(node.kind, Kind::Null) {
                self.fail(
                    SpecErrorKind::MissingField,
                    zp,
                    node.pos,
                    "empty zone: each zone needs at least `name`, e.g. `- name: example.com`".to_string(),
                );
            }
            self.poison(zp);
            return zone;
        };
        let np = zp.field("name");
        match f.get("name") {
            Some((_, v)) => {
                if let Some(name) = self.string(v, &np, "the zone's domain name, such as `example.com`") {
                    zone.name = normalise_host(&name);
                }
            }
            None => {
                self.error(
                    SpecErrorKind::MissingField,
                    zp,
                    node.pos,
                    "missing required field `name`: the zone's domain name, e.g. `name: example.com`".to_string(),
                );
                self.poison(&np);
            }
        }
        if let Some((_, v)) = f.get("ttl") {
            if let Some(ttl) = self.ttl(v, &zp.field("ttl")) {
                zone.ttl = ttl;
            }
        }
        if let Some((_, v)) = f.get("records") {
            let rp = zp.field("records");
            match &v.kind {
                Kind::Seq(items) => {
                    for (j, item) in items.iter().enumerate() {
                        let ip = rp.index(j);
                        self.note(&ip, None, item.pos);
                        let record = self.record(item, &ip, &zone.name);
                        zone.records.push(record);
                    }
                }
                Kind::Null => {}
                _ => self.wrong_type(
                    &rp,
                    v,
                    "a list of records, each item such as `- { name: www, type: A, value: 192.0.2.1 }`",
                ),
            }
        }
        zone
    }

    /// One record of zone `zone`, its value made canonical when it is valid (else kept as
    /// written, for validation to explain).
    fn record(&mut self, node: &Node, rp: &FieldPath, zone: &str) -> RecordSpec {
        let mut record = RecordSpec { name: String::new(), rtype: RecordType::A, value: String::new(), ttl: None };
        const EXAMPLE: &str = "e.g. `- { name: www, type: A, value: 192.0.2.1 }`";
        let fields = match node.kind {
            Kind::Null => None,
            _ => self.fields(node, rp, &RECORD),
        };
        let Some(f) = fields else {
            if matches!(node.kind, Kind::Null) {
                self.fail(
                    SpecErrorKind::MissingField,
                    rp,
                    node.pos,
                    format!("empty record: each record needs `name`, `type` and `value`, {EXAMPLE}"),
                );
            }
            self.poison(rp);
            return record;
        };
        let np = rp.field("name");
        match f.get("name") {
            Some((_, v)) => {
                let expected = "a name relative to the zone, such as `www`, or `\"@\"` for the zone's apex";
                if let Some(name) = self.string(v, &np, expected) {
                    record.name = name.trim().to_ascii_lowercase();
                }
            }
            None => {
                self.error(
                    SpecErrorKind::MissingField,
                    rp,
                    node.pos,
                    "missing required field `name`: the record's name relative to the zone, e.g. `name: www`, or `name: \"@\"` for the zone's apex".to_string(),
                );
                self.poison(&np);
            }
        }
        let tp = rp.field("type");
        let valid: Vec<&str> = RecordType::ALL.iter().map(|t| t.as_str()).collect();
        let mut type_ok = false;
        match f.get("type") {
            Some((_, v)) => {
                if let Some(text) = self.string(v, &tp, &format!("a record type, one of {}", valid.join(", "))) {
                    match text.parse::<RecordType>() {
                        Ok(t) => {
                            record.rtype = t;
                            type_ok = true;
                        }
                        Err(_) => {
                            let upper = text.trim().to_ascii_uppercase();
                            let why = if upper == "NS" || upper == "SOA" {
                                ": holdfast makes the zone's SOA and NS records itself, naming the edge nodes"
                                    .to_string()
                            } else {
                                suggestion_suffix(&upper, valid.iter().copied())
                            };
                            self.fail(
                                SpecErrorKind::InvalidValue,
                                &tp,
                                v.pos,
                                format!(
                                    "unknown record type `{}`{why} (valid: {})",
                                    text.escape_debug(),
                                    valid.join(", ")
                                ),
                            );
                        }
                    }
                }
            }
            None => {
                self.error(
                    SpecErrorKind::MissingField,
                    rp,
                    node.pos,
                    format!("missing required field `type`: one of {}, e.g. `type: A`", valid.join(", ")),
                );
                self.poison(&tp);
            }
        }
        let vp = rp.field("value");
        let mut value_ok = false;
        match f.get("value") {
            Some((_, v)) => match &v.kind {
                Kind::Str(_) | Kind::Int(_) | Kind::Float(_) => {
                    record.value = v.scalar_text().unwrap_or_default();
                    value_ok = true;
                }
                _ => self.wrong_type(
                    &vp,
                    v,
                    "the record's data as a string or a number, such as `192.0.2.1` or `10 mail.example.net`",
                ),
            },
            None => {
                self.error(
                    SpecErrorKind::MissingField,
                    rp,
                    node.pos,
                    format!("missing required field `value`: the record's data, {EXAMPLE}"),
                );
                self.poison(&vp);
            }
        }
        if type_ok && value_ok {
            if let Ok(canonical) = canonical_value(zone, record.rtype, &record.value) {
                record.value = canonical;
            }
        }
        if let Some((_, v)) = f.get("ttl") {
            record.ttl = self.ttl(v, &rp.field("ttl"));
        }
        record
    }

    /// A TTL in seconds: a whole number, or a duration of whole seconds (`15s`, `1m`).
    /// The range is checked by validation.
    fn ttl(&mut self, node: &Node, p: &FieldPath) -> Option<u32> {
        match &node.kind {
            Kind::Int(i) => match u32::try_from(*i) {
                Ok(n) => Some(n),
                Err(_) => {
                    self.fail(SpecErrorKind::InvalidValue, p, node.pos, ttl_range_message(i));
                    None
                }
            },
            Kind::Str(s) => {
                let ms = match parse_duration_ms(s) {
                    Ok(ms) => ms,
                    Err(e) => {
                        self.fail(SpecErrorKind::InvalidValue, p, node.pos, e.to_string());
                        return None;
                    }
                };
                if ms % 1_000 != 0 {
                    self.fail(
                        SpecErrorKind::InvalidValue,
                        p,
                        node.pos,
                        format!(
                            "ttl `{}` is not a whole number of seconds (DNS counts TTLs in seconds), e.g. `15` or `15s`",
                            s.escape_debug()
                        ),
                    );
                    return None;
                }
                match u32::try_from(ms / 1_000) {
                    Ok(n) => Some(n),
                    Err(_) => {
                        self.fail(SpecErrorKind::InvalidValue, p, node.pos, ttl_range_message(s.escape_debug()));
                        None
                    }
                }
            }
            _ => {
                self.wrong_type(p, node, "a TTL in seconds, such as `300`, or a duration such as `5m`");
                None
            }
        }
    }

    fn jobs(&mut self, node: &Node, p: &FieldPath) {
        let Some(entries) =
            self.entries(node, p, "a mapping of job names to jobs, e.g. `migrate: { run: [\"./migrate\"] }`", "job")
        else {
            return;
        };
        for (name, k, v) in entries {
            let jp = p.key(&name);
            if let Some((file, pos)) = self.loader.job_at.get(&name).copied() {
                let first = at(self.loader.files.get(file).map_or("", String::as_str), pos);
                self.error(
                    SpecErrorKind::Duplicate,
                    &jp,
                    k.pos,
                    format!("job `{}` is defined twice (first at {first})", name.escape_debug()),
                );
                continue;
            }
            self.note(&jp, k.pos, v.pos);
            let job = self.job(v, &jp, k.pos);
            self.loader.job_at.insert(name.clone(), (self.file, k.pos));
            self.loader.jobs.insert(name, job);
        }
    }

    fn job(&mut self, node: &Node, jp: &FieldPath, key_pos: Option<LineCol>) -> JobSpec {
        let mut job = JobSpec::new(RunCommand::Argv(Vec::new()));
        let Some(f) = self.fields(node, jp, &JOB) else {
            self.poison(jp);
            return job;
        };
        let run_p = jp.field("run");
        match f.get("run") {
            Some((_, v)) => job.run = self.command(v, &run_p),
            None => {
                self.error(
                    SpecErrorKind::MissingField,
                    jp,
                    key_pos.or(node.pos),
                    format!("missing required field `run`: the command a run executes, {RUN_EXAMPLE}"),
                );
                self.poison(&run_p);
            }
        }
        if let Some((_, v)) = f.get("env") {
            job.env = self.env(v, &jp.field("env"));
        }
        if let Some((_, v)) = f.get("files") {
            job.files = self.files(v, &jp.field("files"));
        }
        if let Some((_, v)) = f.get("workdir") {
            job.workdir = self
                .string(v, &jp.field("workdir"), "an absolute directory path such as `/srv/web`")
                .map(PathBuf::from);
        }
        if let Some((_, v)) = f.get("resources") {
            job.resources = self.resources(v, &jp.field("resources"));
        }
        if let Some((_, v)) = f.get("node_selector") {
            let sp = jp.field("node_selector");
            if let Some(entries) =
                self.entries(v, &sp, "a mapping of node labels to values, e.g. `{ arch: amd64 }`", "label")
            {
                for (key, k, value) in entries {
                    let lp = sp.key(&key);
                    self.note(&lp, k.pos, value.pos);
                    match value.scalar_text() {
                        Some(t) => {
                            job.node_selector.insert(key, t);
                        }
                        None => self.wrong_type(&lp, value, "a label value such as `amd64`"),
                    }
                }
            }
        }
        match (f.get("schedule"), f.get("every")) {
            (Some(_), Some((ek, _))) => self.fail(
                SpecErrorKind::InvalidValue,
                &jp.field("every"),
                ek.pos,
                "a job runs on a `schedule` (cron) or `every` interval, not both; keep one".to_string(),
            ),
            (Some((_, v)), None) => {
                let p = jp.field("schedule");
                if let Some(expr) = self.string(v, &p, "a cron expression such as `0 3 * * *`") {
                    match crate::schedule::check_cron(&expr) {
                        Ok(()) => job.schedule = Some(crate::schedule::JobSchedule::Cron(expr)),
                        Err(msg) => self.fail(SpecErrorKind::InvalidValue, &p, v.pos, msg),
                    }
                }
            }
            (None, Some((_, v))) => {
                let p = jp.field("every");
                if let Some(ms) = self.duration(v, &p) {
                    if !(1_000..=366 * 24 * 3_600_000).contains(&ms) {
                        self.fail(
                            SpecErrorKind::InvalidValue,
                            &p,
                            v.pos,
                            "`every` must be between 1s and 366 days".to_string(),
                        );
                    } else {
                        job.schedule = Some(crate::schedule::JobSchedule::EveryMs(ms));
                    }
                }
            }
            (None, None) => {}
        }
        if let Some((_, v)) = f.get("secrets_write") {
            job.secrets_write =
                self.names(v, &jp.field("secrets_write"), "a list of secret names of this project, e.g. `[oauth-key]`");
        }
        if let Some((_, v)) = f.get("retries") {
            let p = jp.field("retries");
            match &v.kind {
                Kind::Int(i) if (0..=MAX_JOB_RETRIES as i128).contains(i) => job.retries = *i as u32,
                Kind::Int(i) => self.fail(
                    SpecErrorKind::InvalidValue,
                    &p,
                    v.pos,
                    format!("retries must be between 0 and {MAX_JOB_RETRIES}, found {i}"),
                ),
                _ => self.wrong_type(&p, v, &format!("a whole number between 0 and {MAX_JOB_RETRIES}")),
            }
        }
        if let Some((_, v)) = f.get("timeout") {
            let p = jp.field("timeout");
            if let Some(ms) = self.duration(v, &p) {
                if !(1_000..=7 * 24 * 3_600_000).contains(&ms) {
                    self.fail(
                        SpecErrorKind::InvalidValue,
                        &p,
                        v.pos,
                        "timeout must be between 1s and 7 days".to_string(),
                    );
                } else {
                    job.timeout_ms = ms;
                }
            }
        }
        if let Some((_, v)) = f.get("concurrency") {
            let p = jp.field("concurrency");
            let valid: Vec<&str> = Concurrency::ALL.iter().map(|c| c.as_str()).collect();
            if let Some(s) = self.string(v, &p, &format!("one of {}", valid.join(", "))) {
                match s.parse::<Concurrency>() {
                    Ok(c) => job.concurrency = c,
                    Err(()) => self.fail(
                        SpecErrorKind::InvalidValue,
                        &p,
                        v.pos,
                        format!(
                            "invalid concurrency `{}`{} (valid: forbid = skip a slot while a run is going, replace = stop it and start, allow = run both)",
                            s.escape_debug(),
                            suggestion_suffix(&s, valid.iter().copied())
                        ),
                    ),
                }
            }
        }
        job
    }

    /// `secrets: { oauth-key: {} }`: declarations only (a value here is refused: values
    /// are set with `holdfast secret set`, never written in a spec).
    fn secrets(&mut self, node: &Node, p: &FieldPath) {
        let Some(entries) = self.entries(
            node,
            p,
            "a mapping of secret names to `{}`, e.g. `oauth-key: {}` (values are set with `holdfast secret set`)",
            "secret",
        ) else {
            return;
        };
        for (name, k, v) in entries {
            let sp = p.key(&name);
            if let Some((file, pos)) = self.loader.secret_at.get(&name).copied() {
                let first = at(self.loader.files.get(file).map_or("", String::as_str), pos);
                self.error(
                    SpecErrorKind::Duplicate,
                    &sp,
                    k.pos,
                    format!("secret `{}` is declared twice (first at {first})", name.escape_debug()),
                );
                continue;
            }
            self.note(&sp, k.pos, v.pos);
            match &v.kind {
                Kind::Null => {}
                Kind::Map(m) if m.is_empty() => {}
                _ => self.fail(
                    SpecErrorKind::WrongType,
                    &sp,
                    v.pos,
                    format!(
                        "a secret is declared as `{}: {{}}`; its value never goes in a spec: set it with `holdfast secret set <project>/{}` (from stdin or --from-file)",
                        name.escape_debug(),
                        name.escape_debug()
                    ),
                ),
            }
            self.loader.secret_at.insert(name.clone(), (self.file, k.pos));
            self.loader.secrets.insert(name, SecretSpec::default());
        }
    }

    /// `files: { /run/secrets/key: { secret: key } }`.
    fn files(&mut self, node: &Node, p: &FieldPath) -> BTreeMap<String, FileSource> {
        let mut out = BTreeMap::new();
        let Some(entries) = self.entries(node, p, "a mapping of absolute file paths to `{ secret: <name> }`", "file")
        else {
            self.poison(p);
            return out;
        };
        for (path, k, v) in entries {
            let fp = p.key(&path);
            self.note(&fp, k.pos, v.pos);
            match self.secret_ref(v, &fp) {
                Some(secret) => {
                    out.insert(path, FileSource { secret });
                }
                None => self.poison(&fp),
            }
        }
        out
    }

    /// `{ secret: name }`.
    fn secret_ref(&mut self, node: &Node, p: &FieldPath) -> Option<String> {
        if !matches!(node.kind, Kind::Map(_)) {
            self.wrong_type(p, node, "`{ secret: <name> }`, naming a secret declared under `secrets:`");
            return None;
        }
        let f = self.fields(node, p, &SECRET_REF)?;
        match f.get("secret") {
            Some((_, v)) => self.string(v, &p.field("secret"), "the name of a secret declared under `secrets:`"),
            None => {
                self.fail(
                    SpecErrorKind::MissingField,
                    p,
                    node.pos,
                    "missing required field `secret`: the declared secret the file holds, e.g. `{ secret: oauth-key }`"
                        .to_string(),
                );
                None
            }
        }
    }

    fn databases(&mut self, node: &Node, p: &FieldPath) {
        let Some(entries) = self.entries(
            node,
            p,
            "a mapping of database names to databases, e.g. `db: { engine: postgres }`",
            "database",
        ) else {
            return;
        };
        for (name, k, v) in entries {
            let dp = p.key(&name);
            if let Some((file, pos)) = self.loader.database_at.get(&name).copied() {
                let first = at(self.loader.files.get(file).map_or("", String::as_str), pos);
                self.error(
                    SpecErrorKind::Duplicate,
                    &dp,
                    k.pos,
                    format!("database `{}` is defined twice (first at {first})", name.escape_debug()),
                );
                let record = std::mem::replace(&mut self.record, false);
                let _ = self.database(v, &dp, &name);
                self.record = record;
                continue;
            }
            self.note(&dp, k.pos, v.pos);
            let db = self.database(v, &dp, &name);
            self.loader.database_at.insert(name.clone(), (self.file, k.pos));
            self.loader.databases.insert(name, db);
        }
    }

    /// One database, with defaults for what is left out (`databases: [<name>]`, `users`
    /// the same as `databases`).
    fn database(&mut self, node: &Node, dp: &FieldPath, name: &str) -> DatabaseSpec {
        let mut db = DatabaseSpec::new(name);
        let Some(f) = self.fields(node, dp, &DATABASE) else {
            self.poison(dp);
            return db;
        };
        if let Some((_, v)) = f.get("engine") {
            let p = dp.field("engine");
            let valid: Vec<&str> = DbEngine::ALL.iter().map(|e| e.as_str()).collect();
            if let Some(s) = self.string(v, &p, &format!("one of {}", valid.join(", "))) {
                match s.parse::<DbEngine>() {
                    Ok(e) => db.engine = e,
                    Err(_) => self.fail(
                        SpecErrorKind::InvalidValue,
                        &p,
                        v.pos,
                        format!(
                            "unknown database engine `{}`{} (known engines: {})",
                            s.escape_debug(),
                            suggestion_suffix(&s, valid.iter().copied()),
                            valid.join(", ")
                        ),
                    ),
                }
            }
        }
        if db.engine != DbEngine::Postgres {
            db = DatabaseSpec::for_engine(name, db.engine);
        }
        // A field of the other engine: said once, precisely, and otherwise ignored.
        let (foreign, hint): (&[&str], &str) = match db.engine {
            DbEngine::Postgres => (
                REDIS_ONLY,
                "it is a Redis setting (`engine: redis`); a PostgreSQL database takes sync, on_sync_loss, databases, users and parameters",
            ),
            DbEngine::Redis => (
                POSTGRES_ONLY,
                "it is a PostgreSQL setting; a Redis database takes persistence (aof | rdb | none), maxmemory and durability (none | replicated)",
            ),
        };
        for field in foreign {
            if let Some((k, _)) = f.get(field) {
                let p = dp.field(field);
                self.fail(
                    SpecErrorKind::UnknownField,
                    &p,
                    k.pos,
                    format!("`{field}` does not apply to an engine `{}` database: {hint}", db.engine),
                );
            }
        }
        if db.engine == DbEngine::Redis {
            self.redis_fields(&f, dp, &mut db);
        }
        for (field, default) in [("instances", DEFAULT_DB_INSTANCES), ("sync", 0)] {
            if foreign.contains(&field) {
                continue;
            }
            let Some((_, v)) = f.get(field) else { continue };
            let p = dp.field(field);
            let value = match &v.kind {
                Kind::Int(i) => match u32::try_from(*i) {
                    Ok(n) => Some(n),
                    Err(_) => {
                        let range = if field == "instances" {
                            format!("between 1 and {MAX_DB_INSTANCES}")
                        } else {
                            "at least 0".to_string()
                        };
                        self.fail(
                            SpecErrorKind::InvalidValue,
                            &p,
                            v.pos,
                            format!("{field} must be {range}, found {i}"),
                        );
                        None
                    }
                },
                _ => {
                    self.wrong_type(&p, v, "a whole number");
                    None
                }
            };
            let slot = if field == "instances" { &mut db.instances } else { &mut db.sync };
            *slot = value.unwrap_or(default);
        }
        if let Some((_, v)) = f.get("on_sync_loss").filter(|_| !foreign.contains(&"on_sync_loss")) {
            let p = dp.field("on_sync_loss");
            let valid: Vec<&str> = SyncLoss::ALL.iter().map(|e| e.as_str()).collect();
            if let Some(s) = self.string(v, &p, &format!("one of {}", valid.join(", "))) {
                match s.parse::<SyncLoss>() {
                    Ok(e) => db.on_sync_loss = e,
                    Err(_) => self.fail(
                        SpecErrorKind::InvalidValue,
                        &p,
                        v.pos,
                        format!(
                            "invalid on_sync_loss `{}`{} (valid: block = commits wait for the standbys (the default), async = commits go on without them)",
                            s.escape_debug(),
                            suggestion_suffix(&s, valid.iter().copied()),
                        ),
                    ),
                }
            }
        }
        if let Some((_, v)) = f.get("databases").filter(|_| !foreign.contains(&"databases")) {
            db.databases = self.names(v, &dp.field("databases"), "a list of database names, e.g. `[app]`");
            if f.get("users").is_none() {
                db.users = db.databases.clone();
            }
        }
        if let Some((_, v)) = f.get("users").filter(|_| !foreign.contains(&"users")) {
            db.users = self.names(v, &dp.field("users"), "a list of user names, e.g. `[app]`");
        }
        if let Some((_, v)) = f.get("parameters").filter(|_| !foreign.contains(&"parameters")) {
            let pp = dp.field("parameters");
            match self.entries(
                v,
                &pp,
                "a mapping of postgresql.conf settings to values, e.g. `{ work_mem: 64MB }`",
                "parameter",
            ) {
                Some(entries) => {
                    for (key, k, value) in entries {
                        let kp = pp.key(&key);
                        self.note(&kp, k.pos, value.pos);
                        let text = match &value.kind {
                            Kind::Null | Kind::Seq(_) | Kind::Map(_) => {
                                self.wrong_type(&kp, value, "a setting value such as `64MB` or `\"200\"`");
                                String::new()
                            }
                            _ => value.scalar_text().unwrap_or_default(),
                        };
                        db.parameters.insert(key, text);
                    }
                }
                None => self.poison(&pp),
            }
        }
        if let Some((_, v)) = f.get("bin_dir") {
            let p = dp.field("bin_dir");
            db.bin_dir = self
                .string(v, &p, "an absolute directory path such as `/usr/lib/postgresql/15/bin`")
                .map(PathBuf::from);
        }
        if let Some((_, v)) = f.get("placement") {
            db.placement = self.placement(v, &dp.field("placement"));
        }
        if let Some((_, v)) = f.get("resources") {
            db.resources = self.resources(v, &dp.field("resources"));
        }
        db
    }

    /// A Redis database's own fields: `persistence`, `maxmemory` (with a unit: a bare
    /// number is refused, Redis would read it as bytes) and `durability` (kept as
    /// `sync`: `replicated` is 1).
    fn redis_fields(&mut self, f: &Fields<'_>, dp: &FieldPath, db: &mut DatabaseSpec) {
        let mut options = db.redis_options();
        if let Some((_, v)) = f.get("persistence") {
            let p = dp.field("persistence");
            let valid: Vec<&str> = Persistence::ALL.iter().map(|e| e.as_str()).collect();
            if let Some(s) = self.string(v, &p, &format!("one of {}", valid.join(", "))) {
                match s.parse::<Persistence>() {
                    Ok(e) => options.persistence = e,
                    Err(_) => self.fail(
                        SpecErrorKind::InvalidValue,
                        &p,
                        v.pos,
                        format!(
                            "invalid persistence `{}`{} (valid: aof = an append-only file fsynced every second (the default), rdb = periodic snapshots, none = nothing on disk)",
                            s.escape_debug(),
                            suggestion_suffix(&s, valid.iter().copied()),
                        ),
                    ),
                }
            }
        }
        if let Some((_, v)) = f.get("maxmemory") {
            let p = dp.field("maxmemory");
            match &v.kind {
                Kind::Int(_) | Kind::Float(_) | Kind::Str(_) => {
                    let text = v.scalar_text().unwrap_or_default();
                    let bare = !text.trim().is_empty() && text.trim().chars().all(|c| c.is_ascii_digit() || c == '.');
                    if bare {
                        self.fail(
                            SpecErrorKind::InvalidValue,
                            &p,
                            v.pos,
                            format!(
                                "maxmemory `{}` has no unit: write e.g. `{}Mi` (Ki, Mi, Gi binary; K, M, G decimal)",
                                text.trim().escape_debug(),
                                text.trim().escape_debug()
                            ),
                        );
                    } else {
                        match parse_memory_bytes(&text) {
                            Ok(0) => self.fail(
                                SpecErrorKind::InvalidValue,
                                &p,
                                v.pos,
                                "maxmemory 0 would mean no limit in Redis; leave maxmemory out for no limit, or give a size such as `256Mi`".to_string(),
                            ),
                            Ok(b) => options.maxmemory = Some(b),
                            Err(e) => self.fail(SpecErrorKind::InvalidValue, &p, v.pos, e.to_string()),
                        }
                    }
                }
                _ => self.wrong_type(&p, v, "a memory quantity such as `256Mi`"),
            }
        }
        if let Some((_, v)) = f.get("durability") {
            let p = dp.field("durability");
            if let Some(s) = self.string(v, &p, "one of none, replicated") {
                match s.as_str() {
                    "none" => db.sync = 0,
                    "replicated" => db.sync = 1,
                    _ => self.fail(
                        SpecErrorKind::InvalidValue,
                        &p,
                        v.pos,
                        format!(
                            "invalid durability `{}`{} (valid: none = a write is acknowledged by the master alone (the default), replicated = once a replica has it too)",
                            s.escape_debug(),
                            suggestion_suffix(&s, ["none", "replicated"].into_iter()),
                        ),
                    ),
                }
            }
        }
        db.redis = Some(options);
    }

    /// A list of names; items that are not strings are reported and left empty.
    fn names(&mut self, node: &Node, p: &FieldPath, expected: &str) -> Vec<String> {
        let mut out = Vec::new();
        match &node.kind {
            Kind::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let ip = p.index(i);
                    self.note(&ip, None, item.pos);
                    match item.scalar_text() {
                        Some(name) => out.push(name),
                        None => {
                            self.wrong_type(&ip, item, "a name");
                            out.push(String::new());
                        }
                    }
                }
            }
            _ => {
                self.wrong_type(p, node, expected);
            }
        }
        out
    }

    fn services(&mut self, node: &Node, p: &FieldPath) {
        let Some(entries) =
            self.entries(node, p, "a mapping of service names to services, e.g. `web: { run: ... }`", "service")
        else {
            return;
        };
        for (name, k, v) in entries {
            let sp = p.key(&name);
            if let Some((file, pos)) = self.loader.service_at.get(&name).copied() {
                let first = at(self.loader.files.get(file).map_or("", String::as_str), pos);
                self.error(
                    SpecErrorKind::Duplicate,
                    &sp,
                    k.pos,
                    format!("service `{}` is defined twice (first at {first})", name.escape_debug()),
                );
                // Still report problems inside it, but keep nothing.
                let record = std::mem::replace(&mut self.record, false);
                let _ = self.service(v, &sp, &name, k.pos);
                self.record = record;
                continue;
            }
            self.note(&sp, k.pos, v.pos);
            let svc = self.service(v, &sp, &name, k.pos);
            self.loader.service_at.insert(name.clone(), (self.file, k.pos));
            self.loader.services.insert(name, svc);
        }
    }

    fn service(&mut self, node: &Node, sp: &FieldPath, name: &str, key_pos: Option<LineCol>) -> ServiceSpec {
        let placeholder = ServiceSpec::new(RunCommand::Argv(Vec::new()));
        if let Kind::Str(s) = &node.kind {
            self.fail(
                SpecErrorKind::WrongType,
                sp,
                node.pos,
                format!(
                    "expected a mapping with fields {}, found string `{}`; to run a command write `{name}: {{ run: {:?} }}`",
                    SERVICE_FIELDS.join(", "),
                    s.escape_debug(),
                    s
                ),
            );
            return placeholder;
        }
        let Some(f) = self.fields(node, sp, &SERVICE) else {
            self.poison(sp);
            return placeholder;
        };
        let mut svc = placeholder;
        let run_p = sp.field("run");
        if let Some((_, v)) = f.get("image") {
            let p = sp.field("image");
            if let Some(text) = self.string(v, &p, "an image reference such as `registry.example.com/shop/web:1.4.2`") {
                match crate::image::parse_image(&text) {
                    Ok(r) => svc.image = Some(r.to_string()),
                    Err(msg) => self.fail(SpecErrorKind::InvalidValue, &p, v.pos, msg),
                }
            }
        }
        match f.get("run") {
            Some((_, v)) => svc.run = self.command(v, &run_p),
            // With an image, the image's own command.
            None if f.get("image").is_some() => {}
            None => self.error(
                SpecErrorKind::MissingField,
                sp,
                key_pos.or(node.pos),
                format!("missing required field `run`: the command to start, {RUN_EXAMPLE} (or `image:` to run a container)"),
            ),
        }
        if f.get("run").is_none() {
            self.poison(&run_p);
        }
        if let Some((_, v)) = f.get("replicas") {
            let p = sp.field("replicas");
            svc.replicas = match &v.kind {
                Kind::Int(i) => match u32::try_from(*i) {
                    Ok(n) => n,
                    Err(_) => {
                        self.fail(
                            SpecErrorKind::InvalidValue,
                            &p,
                            v.pos,
                            format!("replicas must be between 0 and {MAX_REPLICAS}, found {i}"),
                        );
                        DEFAULT_REPLICAS
                    }
                },
                _ => {
                    self.wrong_type(&p, v, &format!("a whole number of instances between 0 and {MAX_REPLICAS}"));
                    DEFAULT_REPLICAS
                }
            };
        }
        if let Some((_, v)) = f.get("workdir") {
            let p = sp.field("workdir");
            svc.workdir = self.string(v, &p, "an absolute directory path such as `/srv/web`").map(PathBuf::from);
        }
        if let Some((_, v)) = f.get("env") {
            svc.env = self.env(v, &sp.field("env"));
        }
        if let Some((_, v)) = f.get("files") {
            svc.files = self.files(v, &sp.field("files"));
        }
        let mut port_order = Vec::new();
        let mut ports_ok = true;
        if let Some((_, v)) = f.get("ports") {
            match self.ports(v, &sp.field("ports")) {
                Some((ports, order)) => {
                    svc.ports = ports;
                    port_order = order;
                }
                None => ports_ok = false,
            }
        }
        if let Some((hk, v)) = f.get("health") {
            let ctx = PortCtx { service: name, order: &port_order, ok: ports_ok };
            svc.health = self.health(v, &sp.field("health"), hk.pos, &ctx);
        }
        if let Some((_, v)) = f.get("resources") {
            svc.resources = self.resources(v, &sp.field("resources"));
        }
        if let Some((_, v)) = f.get("restart") {
            let p = sp.field("restart");
            let valid: Vec<&str> = RestartPolicy::ALL.iter().map(|r| r.as_str()).collect();
            if let Some(s) = self.string(v, &p, &format!("one of {}", valid.join(", "))) {
                match s.parse::<RestartPolicy>() {
                    Ok(r) => svc.restart = r,
                    Err(_) => self.fail(
                        SpecErrorKind::InvalidValue,
                        &p,
                        v.pos,
                        format!(
                            "invalid restart policy `{}`{} (valid: {})",
                            s.escape_debug(),
                            suggestion_suffix(&s, valid.iter().copied()),
                            valid.join(", ")
                        ),
                    ),
                }
            }
        }
        if let Some((_, v)) = f.get("stop") {
            svc.stop = self.stop(v, &sp.field("stop"));
        }
        if let Some((_, v)) = f.get("placement") {
            svc.placement = self.placement(v, &sp.field("placement"));
        }
        svc
    }

    /// `placement: { node_selector: {...}, spread: nodes|sites, anti_affinity: [...] }`.
    fn placement(&mut self, node: &Node, p: &FieldPath) -> PlacementSpec {
        let mut out = PlacementSpec::default();
        let Some(f) = self.fields(node, p, &PLACEMENT) else {
            self.poison(p);
            return out;
        };
        if let Some((_, v)) = f.get("node_selector") {
            let sp = p.field("node_selector");
            match self.entries(
                v,
                &sp,
                "a mapping of node labels to the values they must have, e.g. `{ arch: arm64, gpu: \"true\" }`",
                "label",
            ) {
                Some(entries) => {
                    for (key, k, value) in entries {
                        let lp = sp.key(&key);
                        self.note(&lp, k.pos, value.pos);
                        let text = match &value.kind {
                            Kind::Null => {
                                self.fail(
                                    SpecErrorKind::InvalidValue,
                                    &lp,
                                    k.pos.or(value.pos),
                                    format!(
                                        "label `{}` has no value: give the value nodes must have, e.g. `{}: \"true\"`",
                                        key.escape_debug(),
                                        key.escape_debug()
                                    ),
                                );
                                String::new()
                            }
                            _ => match value.scalar_text() {
                                Some(t) => t,
                                None => {
                                    self.wrong_type(&lp, value, "a label value such as `arm64` or `\"true\"`");
                                    String::new()
                                }
                            },
                        };
                        out.node_selector.insert(key, text);
                    }
                }
                None => self.poison(&sp),
            }
        }
        if let Some((_, v)) = f.get("spread") {
            let sp = p.field("spread");
            let valid: Vec<&str> = Spread::ALL.iter().map(|s| s.as_str()).collect();
            if let Some(text) = self.string(v, &sp, &format!("one of {}", valid.join(", "))) {
                match text.parse::<Spread>() {
                    Ok(mode) => out.spread = mode,
                    Err(_) => self.fail(
                        SpecErrorKind::InvalidValue,
                        &sp,
                        v.pos,
                        format!(
                            "invalid spread `{}`{} (valid: nodes = over nodes (the default), sites = over sites first)",
                            text.escape_debug(),
                            suggestion_suffix(&text, valid.iter().copied()),
                        ),
                    ),
                }
            } else {
                self.poison(&sp);
            }
        }
        if let Some((_, v)) = f.get("anti_affinity") {
            let ap = p.field("anti_affinity");
            match &v.kind {
                Kind::Seq(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let ip = ap.index(i);
                        self.note(&ip, None, item.pos);
                        match item.scalar_text() {
                            Some(name) => out.anti_affinity.push(name),
                            None => {
                                self.wrong_type(&ip, item, "a service name");
                                out.anti_affinity.push(String::new());
                            }
                        }
                    }
                }
                Kind::Null => {}
                _ => {
                    self.wrong_type(&ap, v, "a list of services of this project, e.g. `[db]`");
                }
            }
        }
        out
    }

    fn command(&mut self, node: &Node, p: &FieldPath) -> RunCommand {
        match &node.kind {
            Kind::Seq(items) => {
                let mut argv = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let ip = p.index(i);
                    self.note(&ip, None, item.pos);
                    match item.scalar_text() {
                        Some(s) => argv.push(s),
                        None => {
                            self.wrong_type(&ip, item, "a string (one argument)");
                            self.poison(p);
                        }
                    }
                }
                RunCommand::Argv(argv)
            }
            Kind::Str(s) => RunCommand::Shell(s.clone()),
            _ => {
                self.wrong_type(p, node, &format!("a command: {RUN_EXAMPLE}"));
                RunCommand::Argv(Vec::new())
            }
        }
    }

    fn env(&mut self, node: &Node, p: &FieldPath) -> BTreeMap<String, EnvValue> {
        let mut env = BTreeMap::new();
        let Some(entries) = self.entries(
            node,
            p,
            "a mapping of variable names to values, e.g. `{ GREETING: hello }`",
            "environment variable",
        ) else {
            return env;
        };
        for (key, k, v) in entries {
            let ep = p.key(&key);
            self.note(&ep, k.pos, v.pos);
            let value = match &v.kind {
                Kind::Null => {
                    self.fail(
                        SpecErrorKind::InvalidValue,
                        &ep,
                        k.pos.or(v.pos),
                        format!(
                            "environment variable `{}` has no value; write `{}: \"\"` for an empty string",
                            key.escape_debug(),
                            key.escape_debug()
                        ),
                    );
                    EnvValue::Value(String::new())
                }
                Kind::Map(entries) if entries.iter().any(|(k, _)| k.scalar_text().as_deref() == Some("secret")) => {
                    match self.secret_ref(v, &ep) {
                        Some(secret) => EnvValue::Secret { secret },
                        None => {
                            self.poison(&ep);
                            EnvValue::Value(String::new())
                        }
                    }
                }
                Kind::Map(_) => self.env_url(v, &ep),
                _ => match v.scalar_text() {
                    Some(s) => EnvValue::Value(s),
                    None => {
                        self.wrong_type(
                            &ep,
                            v,
                            "a string value, a database URL such as `{ url: db }`, or a secret such as `{ secret: oauth-key }`",
                        );
                        EnvValue::Value(String::new())
                    }
                },
            };
            env.insert(key, value);
        }
        env
    }

    /// `{ url: db, endpoint: rw|ro|r, user: app }`.
    fn env_url(&mut self, node: &Node, p: &FieldPath) -> EnvValue {
        let placeholder = EnvValue::Value(String::new());
        let Some(f) = self.fields(node, p, &ENV_URL) else {
            self.poison(p);
            return placeholder;
        };
        let url = match f.get("url") {
            Some((_, v)) => self.string(v, &p.field("url"), "the name of a database of this stack"),
            None => {
                self.fail(
                    SpecErrorKind::MissingField,
                    p,
                    node.pos,
                    "missing required field `url`: the database to connect to, e.g. `{ url: db }`".to_string(),
                );
                return placeholder;
            }
        };
        let Some(url) = url else {
            self.poison(p);
            return placeholder;
        };
        let mut endpoint = DbEndpoint::Rw;
        if let Some((_, v)) = f.get("endpoint") {
            let ep = p.field("endpoint");
            let valid: Vec<&str> = DbEndpoint::ALL.iter().map(|e| e.as_str()).collect();
            if let Some(s) = self.string(v, &ep, &format!("one of {}", valid.join(", "))) {
                match s.parse::<DbEndpoint>() {
                    Ok(e) => endpoint = e,
                    Err(_) => self.fail(
                        SpecErrorKind::InvalidValue,
                        &ep,
                        v.pos,
                        format!(
                            "invalid endpoint `{}`{} (valid: rw = the primary (the default), ro = replicas only, r = any member, sentinel = Redis only: the Sentinel-compatible endpoint)",
                            s.escape_debug(),
                            suggestion_suffix(&s, valid.iter().copied()),
                        ),
                    ),
                }
            }
        }
        let user = match f.get("user") {
            Some((_, v)) => {
                let up = p.field("user");
                let u = self.string(v, &up, "a user of the database");
                if u.is_none() {
                    self.poison(&up);
                }
                u
            }
            None => None,
        };
        EnvValue::Url { url, endpoint, user }
    }

    /// Ports by name, plus their declaration order; `None` if `ports` is
    /// not a mapping.
    fn ports(&mut self, node: &Node, p: &FieldPath) -> Option<(BTreeMap<String, u16>, Vec<String>)> {
        let Some(entries) = self.entries(node, p, "a mapping of port names to numbers, e.g. `{ http: 8080 }`", "port")
        else {
            self.poison(p);
            return None;
        };
        let mut ports = BTreeMap::new();
        let mut order = Vec::new();
        for (name, k, v) in entries {
            let pp = p.key(&name);
            self.note(&pp, k.pos, v.pos);
            let number = match &v.kind {
                Kind::Int(i) => match u16::try_from(*i) {
                    Ok(n) => Some(n),
                    Err(_) => {
                        self.fail(
                            SpecErrorKind::InvalidValue,
                            &pp,
                            v.pos,
                            format!("port must be between 1 and 65535, found {i}"),
                        );
                        None
                    }
                },
                _ => {
                    self.wrong_type(&pp, v, "a port number between 1 and 65535");
                    None
                }
            };
            ports.insert(name.clone(), number.unwrap_or(0));
            order.push(name);
        }
        Some((ports, order))
    }

    fn health(
        &mut self,
        node: &Node,
        hp: &FieldPath,
        key_pos: Option<LineCol>,
        ports: &PortCtx<'_>,
    ) -> Option<HealthSpec> {
        let Some(f) = self.fields(node, hp, &HEALTH) else {
            self.poison(hp);
            return None;
        };
        let kinds: Vec<(&str, &Node, &Node)> =
            ["http", "tcp", "exec"].into_iter().filter_map(|k| f.get(k).map(|(key, v)| (k, key, v))).collect();
        let check = match kinds.as_slice() {
            [] => {
                self.fail(
                    SpecErrorKind::MissingField,
                    hp,
                    key_pos.or(node.pos),
                    "a health check needs one of `http` (e.g. `http: /healthz`), `tcp` (e.g. `tcp: http`) or `exec` (e.g. `exec: [\"test\", \"-f\", \"/tmp/ok\"]`)".to_string(),
                );
                None
            }
            [(kind, _, v)] => self.health_check(kind, v, &hp.field(kind), ports),
            [(first, _, _), (second, k, _), ..] => {
                let msg = format!(
                    "a health check has exactly one of `http`, `tcp` or `exec`, but both `{first}` and `{second}` are given"
                );
                self.fail(SpecErrorKind::InvalidValue, hp, k.pos, msg);
                None
            }
        };
        let has_check = check.is_some();
        let mut health = HealthSpec::new(check.unwrap_or(HealthCheck::Tcp { port: String::new() }));
        if let Some((_, v)) = f.get("interval") {
            if let Some(ms) = self.duration(v, &hp.field("interval")) {
                health.interval_ms = ms;
            }
        }
        match f.get("timeout") {
            Some((_, v)) => {
                if let Some(ms) = self.duration(v, &hp.field("timeout")) {
                    health.timeout_ms = ms;
                }
            }
            // The default timeout never exceeds the interval.
            None => {
                health.timeout_ms = DEFAULT_HEALTH_TIMEOUT_MS.min(health.interval_ms);
                if health.timeout_ms == 0 {
                    health.timeout_ms = DEFAULT_HEALTH_TIMEOUT_MS;
                }
            }
        }
        for (field, slot, default) in [
            ("healthy_threshold", &mut health.healthy_threshold, DEFAULT_HEALTHY_THRESHOLD),
            ("unhealthy_threshold", &mut health.unhealthy_threshold, DEFAULT_UNHEALTHY_THRESHOLD),
        ] {
            *slot = default;
            if let Some((_, v)) = f.get(field) {
                let p = hp.field(field);
                match &v.kind {
                    Kind::Int(i) => match u32::try_from(*i) {
                        Ok(n) => *slot = n,
                        Err(_) => {
                            self.fail(
                                SpecErrorKind::InvalidValue,
                                &p,
                                v.pos,
                                format!("{field} must be a whole number of at least 1, found {i}"),
                            );
                        }
                    },
                    _ => self.wrong_type(&p, v, "a whole number of at least 1"),
                }
            }
        }
        health.start_grace_ms = DEFAULT_START_GRACE_MS;
        if let Some((_, v)) = f.get("start_grace") {
            if let Some(ms) = self.duration(v, &hp.field("start_grace")) {
                health.start_grace_ms = ms;
            }
        }
        if !has_check {
            self.poison(hp);
            return None;
        }
        Some(health)
    }

    /// The port a health check uses when it names none: the first declared.
    fn default_port(&mut self, p: &FieldPath, pos: Option<LineCol>, what: &str, ports: &PortCtx<'_>) -> Option<String> {
        if let Some(first) = ports.order.first() {
            return Some(first.clone());
        }
        if ports.ok {
            self.fail(
                SpecErrorKind::InvalidValue,
                p,
                pos,
                format!(
                    "{what} checks the service's first port, but service `{}` declares no ports: add one under `ports:`, e.g. `ports: {{ http: 8080 }}`",
                    ports.service
                ),
            );
        } else {
            self.poison(p);
        }
        None
    }

    fn health_check(&mut self, kind: &str, v: &Node, p: &FieldPath, ports: &PortCtx<'_>) -> Option<HealthCheck> {
        match kind {
            "http" => match &v.kind {
                Kind::Map(_) | Kind::Null => {
                    let f = self.fields(v, p, &HTTP_CHECK)?;
                    let path = match f.get("path") {
                        Some((_, pv)) => self.string(pv, &p.field("path"), "a URL path such as `/healthz`")?,
                        None => DEFAULT_ROUTE_PATH.to_string(),
                    };
                    let port = match f.get("port") {
                        Some((_, pv)) => self.string(pv, &p.field("port"), "a port name")?,
                        None => self.default_port(p, v.pos, "the `http` health check", ports)?,
                    };
                    Some(HealthCheck::Http { port, path })
                }
                _ => {
                    let path =
                        self.string(v, p, "a URL path such as `/healthz`, or `{ path: /healthz, port: http }`")?;
                    self.note(&p.field("path"), None, v.pos);
                    let port = self.default_port(p, v.pos, &format!("`http: {path}`"), ports)?;
                    Some(HealthCheck::Http { port, path })
                }
            },
            "tcp" => match &v.kind {
                Kind::Map(_) => {
                    let f = self.fields(v, p, &TCP_CHECK)?;
                    let port = match f.get("port") {
                        Some((_, pv)) => self.string(pv, &p.field("port"), "a port name")?,
                        None => self.default_port(p, v.pos, "the `tcp` health check", ports)?,
                    };
                    Some(HealthCheck::Tcp { port })
                }
                _ => {
                    let port = self.string(v, p, "a port name such as `http`")?;
                    self.note(&p.field("port"), None, v.pos);
                    Some(HealthCheck::Tcp { port })
                }
            },
            _ => {
                let command = self.command(v, p);
                Some(HealthCheck::Exec { command })
            }
        }
    }

    fn duration(&mut self, node: &Node, p: &FieldPath) -> Option<u64> {
        let parsed = match &node.kind {
            Kind::Int(i) if *i < 0 => Err(format!("invalid duration `{i}`: durations cannot be negative")),
            Kind::Int(_) | Kind::Float(_) | Kind::Str(_) => {
                let text = node.scalar_text().unwrap_or_default();
                parse_duration_ms(&text).map_err(|e| e.to_string())
            }
            _ => {
                self.wrong_type(p, node, "a duration such as `500ms`, `2s` or `1m30s`");
                return None;
            }
        };
        match parsed {
            Ok(ms) => Some(ms),
            Err(msg) => {
                self.fail(SpecErrorKind::InvalidValue, p, node.pos, msg);
                None
            }
        }
    }

    fn resources(&mut self, node: &Node, p: &FieldPath) -> Resources {
        let mut res = Resources::default();
        let Some(f) = self.fields(node, p, &RESOURCES) else {
            self.poison(p);
            return res;
        };
        if let Some((_, v)) = f.get("cpu") {
            let cp = p.field("cpu");
            match &v.kind {
                Kind::Int(_) | Kind::Float(_) | Kind::Str(_) => {
                    let text = v.scalar_text().unwrap_or_default();
                    match parse_cpu_millis(&text) {
                        Ok(m) => res.cpu_millis = Some(m),
                        Err(e) => self.fail(SpecErrorKind::InvalidValue, &cp, v.pos, e.to_string()),
                    }
                }
                _ => self.wrong_type(&cp, v, "a CPU quantity such as `0.5` or `500m`"),
            }
        }
        if let Some((_, v)) = f.get("memory") {
            let mp = p.field("memory");
            match &v.kind {
                Kind::Int(_) | Kind::Float(_) | Kind::Str(_) => {
                    let text = v.scalar_text().unwrap_or_default();
                    match parse_memory_bytes(&text) {
                        Ok(b) => res.memory_bytes = Some(b),
                        Err(e) => self.fail(SpecErrorKind::InvalidValue, &mp, v.pos, e.to_string()),
                    }
                }
                _ => self.wrong_type(&mp, v, "a memory quantity such as `256Mi`"),
            }
        }
        res
    }

    fn stop(&mut self, node: &Node, p: &FieldPath) -> StopSpec {
        let mut stop = StopSpec::default();
        let Some(f) = self.fields(node, p, &STOP) else {
            self.poison(p);
            return stop;
        };
        let valid: Vec<&str> = StopSignal::ALL.iter().map(|s| s.name()).collect();
        if let Some((_, v)) = f.get("signal") {
            let sp = p.field("signal");
            if let Some(s) = self.string(v, &sp, &format!("a signal name, one of {}", valid.join(", "))) {
                match s.parse::<StopSignal>() {
                    Ok(sig) => stop.signal = sig,
                    Err(_) => {
                        let upper = s.to_ascii_uppercase();
                        let full = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
                        self.fail(
                            SpecErrorKind::InvalidValue,
                            &sp,
                            v.pos,
                            format!(
                                "unknown stop signal `{}`{} (valid: {})",
                                s.escape_debug(),
                                suggestion_suffix(&full, valid.iter().copied()),
                                valid.join(", ")
                            ),
                        );
                    }
                }
            }
        }
        stop.grace_ms = DEFAULT_STOP_GRACE_MS;
        if let Some((_, v)) = f.get("grace") {
            if let Some(ms) = self.duration(v, &p.field("grace")) {
                stop.grace_ms = ms;
            }
        }
        stop
    }

    fn routes(&mut self, node: &Node, p: &FieldPath) {
        let items = match &node.kind {
            Kind::Seq(items) => items,
            Kind::Null => return,
            _ => {
                self.wrong_type(p, node, "a list of routes, each item starting with `- host: ...`");
                return;
            }
        };
        for (i, item) in items.iter().enumerate() {
            let rp = p.index(i);
            self.note(&rp, None, item.pos);
            if matches!(item.kind, Kind::Null) {
                self.fail(
                    SpecErrorKind::MissingField,
                    &rp,
                    item.pos,
                    "empty route: each route needs at least `host` and `service`, e.g. `- { host: demo.localhost, service: web }`".to_string(),
                );
            }
            let (route, omitted) = self.route(item, &rp);
            self.loader.routes.push(route);
            self.loader.route_port_omitted.push(omitted);
        }
    }

    /// One route, with placeholders where it is broken; `true` if it named
    /// no port.
    fn route(&mut self, node: &Node, rp: &FieldPath) -> (RouteSpec, bool) {
        let mut route = RouteSpec {
            host: String::new(),
            path: DEFAULT_ROUTE_PATH.to_string(),
            service: String::new(),
            port: String::new(),
            tls: RouteTls::None,
            https_redirect: false,
            timeout_ms: None,
        };
        if matches!(node.kind, Kind::Null) {
            return (route, false);
        }
        let Some(f) = self.fields(node, rp, &ROUTE) else {
            self.poison(rp);
            return (route, false);
        };
        for (field, example) in [("host", "`host: demo.localhost`"), ("service", "`service: web`")] {
            let fp = rp.field(field);
            let value = match f.get(field) {
                Some((_, v)) => self.string(v, &fp, "a string"),
                None => {
                    self.error(
                        SpecErrorKind::MissingField,
                        rp,
                        node.pos,
                        format!("missing required field `{field}`, e.g. {example}"),
                    );
                    None
                }
            };
            match value {
                Some(s) if field == "host" => route.host = normalise_host(&s),
                Some(s) => route.service = s,
                None => self.poison(&fp),
            }
        }
        if let Some((_, v)) = f.get("path") {
            let pp = rp.field("path");
            if let Some(s) = self.string(v, &pp, "a URL path prefix such as `/` or `/api`") {
                route.path = s;
            }
        }
        let omitted = match f.get("port") {
            Some((_, v)) => {
                let pp = rp.field("port");
                if let Some(s) = self.string(v, &pp, "a port name of the service") {
                    route.port = s;
                }
                false
            }
            None => true,
        };
        if let Some((_, v)) = f.get("tls") {
            let tp = rp.field("tls");
            match self.route_tls(v, &tp) {
                Some(tls) => route.tls = tls,
                None => self.poison(&tp),
            }
        }
        if let Some((_, v)) = f.get("https_redirect") {
            match &v.kind {
                Kind::Bool(b) => route.https_redirect = *b,
                _ => self.wrong_type(&rp.field("https_redirect"), v, "`true` or `false`"),
            }
        }
        if let Some((_, v)) = f.get("timeout") {
            route.timeout_ms = self.duration(v, &rp.field("timeout"));
        }
        (route, omitted)
    }

    /// A route's `tls`: `auto`, or `{ cert: <secret>, key: <secret> }`.
    fn route_tls(&mut self, node: &Node, p: &FieldPath) -> Option<RouteTls> {
        match &node.kind {
            Kind::Str(s) if s == "auto" => Some(RouteTls::Auto),
            Kind::Str(s) => {
                self.fail(
                    SpecErrorKind::InvalidValue,
                    p,
                    node.pos,
                    format!(
                        "invalid tls `{}`{} (valid: {TLS_FORMS})",
                        s.escape_debug(),
                        suggestion_suffix(s, ["auto"].into_iter())
                    ),
                );
                None
            }
            Kind::Map(_) => {
                let f = self.fields(node, p, &ROUTE_TLS)?;
                let mut names = Vec::new();
                for (field, holds) in [("cert", "the PEM certificate chain"), ("key", "its private key")] {
                    match f.get(field) {
                        Some((_, v)) => names.push(self.string(
                            v,
                            &p.field(field),
                            "the name of a secret declared under `secrets:`",
                        )),
                        None => {
                            self.error(
                                SpecErrorKind::MissingField,
                                p,
                                node.pos,
                                format!(
                                    "missing required field `{field}`: the secret holding {holds}, e.g. `tls: {{ cert: shop-cert, key: shop-key }}`"
                                ),
                            );
                            names.push(None);
                        }
                    }
                }
                match <[Option<String>; 2]>::try_from(names) {
                    Ok([Some(cert), Some(key)]) => Some(RouteTls::Secrets { cert, key }),
                    _ => None,
                }
            }
            _ => {
                self.fail(
                    SpecErrorKind::WrongType,
                    p,
                    node.pos,
                    format!(
                        "expected `auto` or `{{ cert: <secret>, key: <secret> }}`, found {} (valid: {TLS_FORMS})",
                        node.describe()
                    ),
                );
                None
            }
        }
    }
}

/// What a health check needs to know about its service's ports.
struct PortCtx<'a> {
    service: &'a str,
    /// Port names in declaration order.
    order: &'a [String],
    /// False if `ports` itself was malformed.
    ok: bool,
}
