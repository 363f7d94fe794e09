//! The canonical, validated spec model: what a parsed YAML spec becomes, what
//! the API carries as JSON and what the Raft log stores.
//!
//! Encodings are deliberately plain and stable: durations are `u64`
//! milliseconds in fields named `*_ms`, memory is bytes, CPU is millicores,
//! and every enum serializes to a lowercase/kebab-case or `SIG*` string.
//! Renaming a field here is a wire-format change.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Project name used when no spec file sets `project:`.
pub const DEFAULT_PROJECT: &str = "default";
/// Default `replicas`.
pub const DEFAULT_REPLICAS: u32 = 1;
/// Largest accepted `replicas`.
pub const MAX_REPLICAS: u32 = 1000;
/// Default health-check `interval`.
pub const DEFAULT_HEALTH_INTERVAL_MS: u64 = 2_000;
/// Default health-check `timeout`.
pub const DEFAULT_HEALTH_TIMEOUT_MS: u64 = 1_000;
/// Default health-check `healthy_threshold`.
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 1;
/// Default health-check `unhealthy_threshold`.
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;
/// Default health-check `start_grace`.
pub const DEFAULT_START_GRACE_MS: u64 = 0;
/// Default `stop.grace`.
pub const DEFAULT_STOP_GRACE_MS: u64 = 10_000;
/// Default route path prefix.
pub const DEFAULT_ROUTE_PATH: &str = "/";

/// A whole deployment: every service and route of one project, merged from
/// all of its spec files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stack {
    /// Project name (a DNS label).
    pub project: String,
    /// Services by name (DNS labels).
    pub services: BTreeMap<String, ServiceSpec>,
    /// HTTP routes, in declaration order (files in the order given).
    pub routes: Vec<RouteSpec>,
    /// Managed databases by name (DNS labels, never the name of a service). Absent in
    /// JSON written before it existed (and left out when empty).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub databases: BTreeMap<String, DatabaseSpec>,
    /// Secrets this project's services read (`secrets: { oauth-key: {} }`): declared
    /// here, their values set with `holdfast secret set` and kept sealed in the cluster.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, SecretSpec>,
    /// Jobs by name: commands run to completion, now (`holdfast run`) or on a schedule.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub jobs: BTreeMap<String, JobSpec>,
    /// Zones the edge nodes answer for (`dns: { zones: [...] }`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<ZoneSpec>,
}

/// Default `timeout` of a job run (1 hour).
pub const DEFAULT_JOB_TIMEOUT_MS: u64 = 3_600_000;
/// Largest `retries`.
pub const MAX_JOB_RETRIES: u32 = 10;

/// A job: a command run to completion on one node, placed like a replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub run: RunCommand,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, EnvValue>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, FileSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<PathBuf>,
    #[serde(default)]
    pub resources: Resources,
    /// Node labels a node must have to run it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// When it runs by itself; `None`: only with `holdfast run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<crate::schedule::JobSchedule>,
    /// Secrets of its project a run may set a new version of (with the token it gets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets_write: Vec<String>,
    /// Attempts after a failed one (exit code not 0, timeout, node lost).
    #[serde(default)]
    pub retries: u32,
    /// A run still going after this long is stopped and counts as failed.
    pub timeout_ms: u64,
    /// What a slot does while a run is still going.
    #[serde(default)]
    pub concurrency: Concurrency,
}

impl JobSpec {
    /// A job running `run` only when asked, with every other field at its default.
    pub fn new(run: RunCommand) -> Self {
        JobSpec {
            run,
            env: BTreeMap::new(),
            files: BTreeMap::new(),
            workdir: None,
            resources: Resources::default(),
            node_selector: BTreeMap::new(),
            schedule: None,
            secrets_write: Vec::new(),
            retries: 0,
            timeout_ms: DEFAULT_JOB_TIMEOUT_MS,
            concurrency: Concurrency::default(),
        }
    }

    /// The secrets a run reads, from `env` and `files`.
    pub fn secrets_used(&self) -> std::collections::BTreeSet<&str> {
        let env = self.env.values().filter_map(|v| match v {
            EnvValue::Secret { secret } => Some(secret.as_str()),
            _ => None,
        });
        env.chain(self.files.values().map(|f| f.secret.as_str())).collect()
    }
}

/// What a scheduled slot does while an earlier run of the job is still going.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Concurrency {
    /// Skip the slot (the default).
    #[default]
    Forbid,
    /// Stop the running one, then start.
    Replace,
    /// Start anyway.
    Allow,
}

impl Concurrency {
    pub const ALL: [Concurrency; 3] = [Concurrency::Forbid, Concurrency::Replace, Concurrency::Allow];
    pub fn as_str(self) -> &'static str {
        match self {
            Concurrency::Forbid => "forbid",
            Concurrency::Replace => "replace",
            Concurrency::Allow => "allow",
        }
    }
}

impl FromStr for Concurrency {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Concurrency::ALL.into_iter().find(|c| c.as_str() == s).ok_or(())
    }
}

/// A declared secret. Its value is never in a spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretSpec {}

/// Where a file an instance reads comes from (`files: { /run/secrets/key: { secret: key } }`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSource {
    /// The declared secret whose current value the file holds.
    pub secret: String,
}

impl Default for Stack {
    fn default() -> Self {
        Stack {
            project: DEFAULT_PROJECT.to_string(),
            services: BTreeMap::new(),
            routes: Vec::new(),
            databases: BTreeMap::new(),
            secrets: BTreeMap::new(),
            jobs: BTreeMap::new(),
            zones: Vec::new(),
        }
    }
}

/// One service: a command run as `replicas` instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// What each instance runs. With `image`, the command run in the container instead
    /// of the image's own (an empty argv: the image's).
    pub run: RunCommand,
    /// An OCI image to run in a container instead of a program of the node, fully
    /// qualified (`docker.io/library/busybox:latest`; see [`crate::image`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Extra environment variables: literal values, or URLs of the stack's databases
    /// resolved by the node that starts the instance.
    pub env: BTreeMap<String, EnvValue>,
    /// Working directory (absolute); `None` leaves it to the agent.
    pub workdir: Option<PathBuf>,
    /// Number of instances wanted.
    pub replicas: u32,
    /// Named stable ports (name → port clients use).
    pub ports: BTreeMap<String, u16>,
    /// Health check, if any.
    pub health: Option<HealthSpec>,
    /// Resource requests.
    pub resources: Resources,
    /// What to do when an instance exits.
    pub restart: RestartPolicy,
    /// How to stop an instance.
    pub stop: StopSpec,
    /// Where replicas may run: node selector, spread, anti-affinity. Absent in JSON
    /// written before it existed (and left out when it is the default).
    #[serde(default, skip_serializing_if = "PlacementSpec::is_default")]
    pub placement: PlacementSpec,
    /// Files holding secrets, by the absolute path the instance reads them at (mode 0400,
    /// on tmpfs, in the instance's own view of that directory).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, FileSource>,
}

impl ServiceSpec {
    /// The secrets this service reads, from `env` and `files`.
    pub fn secrets_used(&self) -> std::collections::BTreeSet<&str> {
        let env = self.env.values().filter_map(|v| match v {
            EnvValue::Secret { secret } => Some(secret.as_str()),
            _ => None,
        });
        env.chain(self.files.values().map(|f| f.secret.as_str())).collect()
    }

    /// A service running `run` with every other field at its default.
    pub fn new(run: RunCommand) -> Self {
        ServiceSpec {
            run,
            image: None,
            env: BTreeMap::new(),
            workdir: None,
            replicas: DEFAULT_REPLICAS,
            ports: BTreeMap::new(),
            health: None,
            resources: Resources::default(),
            restart: RestartPolicy::default(),
            stop: StopSpec::default(),
            placement: PlacementSpec::default(),
            files: BTreeMap::new(),
        }
    }
}

/// The value of one environment variable (`env:` in YAML).
///
/// Wire format: a literal is a plain JSON string, exactly as `env` values were stored
/// before database URLs existed (untagged, the string variant first), so Raft logs and
/// snapshots written by older versions still load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EnvValue {
    /// A literal value.
    Value(String),
    /// `{ url: db, endpoint: rw, user: app }`: the connection URL of a database of the
    /// same stack, resolved by the node (it holds the credentials).
    Url {
        /// The database's name.
        url: String,
        /// Which endpoint: the primary (`rw`, the default), replicas only (`ro`) or any
        /// member (`r`).
        #[serde(default)]
        endpoint: DbEndpoint,
        /// The role to connect as; `None` is the database's first user.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
    },
    /// `{ secret: oauth-key }`: the current value of a secret declared in the same stack,
    /// opened by the node that starts the instance.
    Secret {
        /// The secret's name.
        secret: String,
    },
}

impl EnvValue {
    /// The literal value, or `None` for a value the node resolves (a database URL).
    pub fn literal(&self) -> Option<&str> {
        match self {
            EnvValue::Value(v) => Some(v),
            EnvValue::Url { .. } | EnvValue::Secret { .. } => None,
        }
    }
}

impl From<&str> for EnvValue {
    fn from(v: &str) -> Self {
        EnvValue::Value(v.to_string())
    }
}

impl From<String> for EnvValue {
    fn from(v: String) -> Self {
        EnvValue::Value(v)
    }
}

impl PartialEq<&str> for EnvValue {
    fn eq(&self, other: &&str) -> bool {
        self.literal() == Some(*other)
    }
}

/// Which endpoint of a database a URL points at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DbEndpoint {
    /// The primary: reads and writes.
    #[default]
    Rw,
    /// Replicas only (read-only; fails over to nothing when there is none).
    Ro,
    /// Any member, primary included (read-only use).
    R,
    /// Redis only: holdfast's Sentinel-compatible endpoint, for Sentinel-aware clients
    /// (it names the `rw` and `ro` addresses as the master and the replicas).
    Sentinel,
}

impl DbEndpoint {
    /// Every endpoint, in documentation order (not every engine has every one:
    /// [`DbEngine::endpoints`]).
    pub const ALL: [DbEndpoint; 4] = [DbEndpoint::Rw, DbEndpoint::Ro, DbEndpoint::R, DbEndpoint::Sentinel];

    /// The spelling used in YAML and JSON, also the suffix of the endpoint's service
    /// name (`<db>-rw`, `<db>-ro`, `<db>-r`).
    pub fn as_str(self) -> &'static str {
        match self {
            DbEndpoint::Rw => "rw",
            DbEndpoint::Ro => "ro",
            DbEndpoint::R => "r",
            DbEndpoint::Sentinel => "sentinel",
        }
    }
}

impl fmt::Display for DbEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DbEndpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DbEndpoint::ALL.into_iter().find(|e| e.as_str() == s).ok_or_else(|| format!("unknown endpoint `{s}`"))
    }
}

/// Default database `instances`.
pub const DEFAULT_DB_INSTANCES: u32 = 1;
/// Largest accepted database `instances`.
pub const MAX_DB_INSTANCES: u32 = 9;
/// The port every PostgreSQL endpoint listens on.
pub const POSTGRES_PORT: u16 = 5432;
/// The port every Redis endpoint listens on (but `sentinel`).
pub const REDIS_PORT: u16 = 6379;
/// The port of a Redis database's Sentinel-compatible endpoint.
pub const SENTINEL_PORT: u16 = 26379;

/// One managed database (`databases.<name>` in YAML): a primary and `instances - 1`
/// streaming standbys (Redis: a master and replicas), failed over by the leader.
///
/// PostgreSQL uses `sync`, `on_sync_loss`, `databases`, `users` and `parameters`. Redis
/// uses [`DatabaseSpec::redis`]; its YAML `durability: replicated` is `sync: 1` here (a
/// write is acknowledged once a replica has it) and `none` is `sync: 0`; its one user is
/// Redis's `default` user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseSpec {
    /// Which database server.
    pub engine: DbEngine,
    /// Members: one primary and `instances - 1` standbys (1..=9).
    pub instances: u32,
    /// A commit waits for `ANY sync` standbys (0: asynchronous replication).
    pub sync: u32,
    /// What the primary does when fewer than `sync` standbys are connected.
    pub on_sync_loss: SyncLoss,
    /// Databases created (unquoted PostgreSQL identifiers).
    pub databases: Vec<String>,
    /// Login roles created; the first is the default of `{ url: <db> }`.
    pub users: Vec<String>,
    /// `postgresql.conf` settings (names checked against PostgreSQL 15's).
    pub parameters: BTreeMap<String, String>,
    /// Where the server's binaries are (absolute); `None` lets the node find them.
    pub bin_dir: Option<PathBuf>,
    /// Where members may run (members of one database never share a node).
    #[serde(default, skip_serializing_if = "PlacementSpec::is_default")]
    pub placement: PlacementSpec,
    /// Requests per member, for placement.
    pub resources: Resources,
    /// Redis's own settings (`None` for PostgreSQL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisOptions>,
}

/// A Redis database's own settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisOptions {
    /// How members keep their data on disk.
    #[serde(default)]
    pub persistence: Persistence,
    /// `maxmemory` of every member, in bytes (`None`: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxmemory: Option<u64>,
}

/// How a Redis member keeps its data on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Persistence {
    /// An append-only file, fsynced every second (a restart loses at most about 1 s).
    #[default]
    Aof,
    /// Periodic RDB snapshots only.
    Rdb,
    /// Nothing on disk: a restarted member starts empty (and is never made master
    /// while another member holds the data).
    None,
}

impl Persistence {
    /// Every mode, in documentation order.
    pub const ALL: [Persistence; 3] = [Persistence::Aof, Persistence::Rdb, Persistence::None];

    /// The spelling used in YAML and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Persistence::Aof => "aof",
            Persistence::Rdb => "rdb",
            Persistence::None => "none",
        }
    }
}

impl fmt::Display for Persistence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Persistence {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Persistence::ALL.into_iter().find(|e| e.as_str() == s).ok_or_else(|| format!("unknown persistence `{s}`"))
    }
}

/// The Redis user services connect as (`requirepass`).
pub const REDIS_DEFAULT_USER: &str = "default";

impl DatabaseSpec {
    /// A database named `name` with every field at its default: one instance, async,
    /// one database and one user named after it (`-` becomes `_`).
    pub fn new(name: &str) -> Self {
        let ident = name.replace('-', "_");
        DatabaseSpec {
            engine: DbEngine::Postgres,
            instances: DEFAULT_DB_INSTANCES,
            sync: 0,
            on_sync_loss: SyncLoss::Block,
            databases: vec![ident.clone()],
            users: vec![ident],
            parameters: BTreeMap::new(),
            bin_dir: None,
            placement: PlacementSpec::default(),
            resources: Resources::default(),
            redis: None,
        }
    }

    /// A database of `engine` named `name` with every field at its default (Redis: AOF,
    /// no maxmemory, `durability: none`, its `default` user).
    pub fn for_engine(name: &str, engine: DbEngine) -> Self {
        match engine {
            DbEngine::Postgres => DatabaseSpec::new(name),
            DbEngine::Redis => DatabaseSpec {
                engine,
                databases: Vec::new(),
                users: vec![REDIS_DEFAULT_USER.to_string()],
                redis: Some(RedisOptions::default()),
                ..DatabaseSpec::new(name)
            },
        }
    }

    /// The Redis settings, defaults when absent.
    pub fn redis_options(&self) -> RedisOptions {
        self.redis.clone().unwrap_or_default()
    }
}

/// A database server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DbEngine {
    /// PostgreSQL with streaming replication.
    #[default]
    Postgres,
    /// Redis with asynchronous replication (`durability: replicated` waits for a replica).
    Redis,
}

impl DbEngine {
    /// Every engine, in documentation order.
    pub const ALL: [DbEngine; 2] = [DbEngine::Postgres, DbEngine::Redis];

    /// The spelling used in YAML and JSON; also the key nodes report the engine's
    /// version under (`NodeRecord::software`).
    pub fn as_str(self) -> &'static str {
        match self {
            DbEngine::Postgres => "postgres",
            DbEngine::Redis => "redis",
        }
    }

    /// The product's name, for people.
    pub fn product(self) -> &'static str {
        match self {
            DbEngine::Postgres => "PostgreSQL",
            DbEngine::Redis => "Redis",
        }
    }

    /// The endpoints a database of this engine has.
    pub fn endpoints(self) -> &'static [DbEndpoint] {
        match self {
            DbEngine::Postgres => &[DbEndpoint::Rw, DbEndpoint::Ro, DbEndpoint::R],
            DbEngine::Redis => &[DbEndpoint::Rw, DbEndpoint::Ro, DbEndpoint::R, DbEndpoint::Sentinel],
        }
    }

    /// The service name of `endpoint` of database `db`: `<db>-rw`, `<db>-ro`, `<db>-r`
    /// (PostgreSQL); `<db>` (the master), `<db>-ro`, `<db>-r`, `<db>-sentinel` (Redis).
    pub fn endpoint_name(self, db: &str, endpoint: DbEndpoint) -> String {
        match (self, endpoint) {
            (DbEngine::Redis, DbEndpoint::Rw) => db.to_string(),
            _ => format!("{db}-{endpoint}"),
        }
    }

    /// The port `endpoint` listens on at its address.
    pub fn port(self, endpoint: DbEndpoint) -> u16 {
        match (self, endpoint) {
            (DbEngine::Postgres, _) => POSTGRES_PORT,
            (DbEngine::Redis, DbEndpoint::Sentinel) => SENTINEL_PORT,
            (DbEngine::Redis, _) => REDIS_PORT,
        }
    }

    /// Whether members must run on one CPU architecture (PostgreSQL replicas replay the
    /// primary's files byte for byte; Redis replicates a portable format).
    pub fn one_architecture(self) -> bool {
        matches!(self, DbEngine::Postgres)
    }
}

impl fmt::Display for DbEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DbEngine {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DbEngine::ALL.into_iter().find(|e| e.as_str() == s).ok_or_else(|| format!("unknown engine `{s}`"))
    }
}

/// What the primary does while fewer than `sync` standbys are connected. Either way the
/// leader promotes only a standby that holds every acknowledged commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncLoss {
    /// Commits wait until enough standbys are back (no acknowledged write is on fewer
    /// than `sync` standbys).
    #[default]
    Block,
    /// The primary falls back to asynchronous commits until they are back.
    Async,
}

impl SyncLoss {
    /// Every mode, in documentation order.
    pub const ALL: [SyncLoss; 2] = [SyncLoss::Block, SyncLoss::Async];

    /// The spelling used in YAML and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncLoss::Block => "block",
            SyncLoss::Async => "async",
        }
    }
}

impl fmt::Display for SyncLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SyncLoss {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SyncLoss::ALL.into_iter().find(|e| e.as_str() == s).ok_or_else(|| format!("unknown on_sync_loss `{s}`"))
    }
}

/// A command: either an argv list or a shell string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunCommand {
    /// Executed directly; `argv[0]` is looked up in `PATH`.
    Argv(Vec<String>),
    /// Run through `/bin/sh -c`.
    Shell(String),
}

impl RunCommand {
    /// The argv to execute: `Shell(s)` becomes `["/bin/sh", "-c", s]`.
    pub fn argv(&self) -> Vec<String> {
        match self {
            RunCommand::Argv(argv) => argv.clone(),
            RunCommand::Shell(script) => {
                vec!["/bin/sh".to_string(), "-c".to_string(), script.clone()]
            }
        }
    }
}

impl fmt::Display for RunCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunCommand::Argv(argv) => {
                let parts: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
                write!(f, "[{}]", parts.join(", "))
            }
            RunCommand::Shell(script) => write!(f, "{script:?}"),
        }
    }
}

/// A health check and its timing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSpec {
    /// What is probed.
    pub check: HealthCheck,
    /// Time between probes.
    pub interval_ms: u64,
    /// Time a probe may take; at most `interval_ms`.
    pub timeout_ms: u64,
    /// Consecutive successes before an instance counts as healthy.
    pub healthy_threshold: u32,
    /// Consecutive failures before an instance counts as unhealthy.
    pub unhealthy_threshold: u32,
    /// Time after start during which failures do not count.
    pub start_grace_ms: u64,
}

impl HealthSpec {
    /// A health check with default timing.
    pub fn new(check: HealthCheck) -> Self {
        HealthSpec {
            check,
            interval_ms: DEFAULT_HEALTH_INTERVAL_MS,
            timeout_ms: DEFAULT_HEALTH_TIMEOUT_MS,
            healthy_threshold: DEFAULT_HEALTHY_THRESHOLD,
            unhealthy_threshold: DEFAULT_UNHEALTHY_THRESHOLD,
            start_grace_ms: DEFAULT_START_GRACE_MS,
        }
    }
}

/// The probe of a health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheck {
    /// HTTP GET of `path` on the named port; 2xx/3xx is healthy.
    Http {
        /// Name of a port declared by the service.
        port: String,
        /// Request path, starting with `/`.
        path: String,
    },
    /// TCP connect to the named port.
    Tcp {
        /// Name of a port declared by the service.
        port: String,
    },
    /// Run a command; exit status 0 is healthy.
    Exec {
        /// The command.
        command: RunCommand,
    },
}

/// Resource requests; `None` means unspecified.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU in millicores (1000 = one core).
    pub cpu_millis: Option<u32>,
    /// Memory in bytes.
    pub memory_bytes: Option<u64>,
}

/// What to do when an instance exits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Restart whatever the exit status.
    #[default]
    Always,
    /// Restart only after a non-zero exit or a signal.
    OnFailure,
    /// Never restart.
    Never,
}

impl RestartPolicy {
    /// Every policy, in documentation order.
    pub const ALL: [RestartPolicy; 3] = [RestartPolicy::Always, RestartPolicy::OnFailure, RestartPolicy::Never];

    /// The spelling used in YAML and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "never",
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RestartPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RestartPolicy::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| format!("unknown restart policy `{s}`"))
    }
}

/// How an instance is stopped: `signal`, then SIGKILL after `grace_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopSpec {
    /// First signal sent.
    pub signal: StopSignal,
    /// Time allowed between `signal` and SIGKILL.
    pub grace_ms: u64,
}

impl Default for StopSpec {
    fn default() -> Self {
        StopSpec { signal: StopSignal::Term, grace_ms: DEFAULT_STOP_GRACE_MS }
    }
}

/// Signals a service may be stopped with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StopSignal {
    /// SIGTERM (15).
    #[default]
    #[serde(rename = "SIGTERM")]
    Term,
    /// SIGINT (2).
    #[serde(rename = "SIGINT")]
    Int,
    /// SIGQUIT (3).
    #[serde(rename = "SIGQUIT")]
    Quit,
    /// SIGHUP (1).
    #[serde(rename = "SIGHUP")]
    Hup,
    /// SIGUSR1 (10).
    #[serde(rename = "SIGUSR1")]
    Usr1,
    /// SIGUSR2 (12).
    #[serde(rename = "SIGUSR2")]
    Usr2,
    /// SIGKILL (9).
    #[serde(rename = "SIGKILL")]
    Kill,
}

impl StopSignal {
    /// Every accepted signal.
    pub const ALL: [StopSignal; 7] = [
        StopSignal::Term,
        StopSignal::Int,
        StopSignal::Quit,
        StopSignal::Hup,
        StopSignal::Usr1,
        StopSignal::Usr2,
        StopSignal::Kill,
    ];

    /// The Linux signal number.
    pub fn number(&self) -> i32 {
        match self {
            StopSignal::Hup => 1,
            StopSignal::Int => 2,
            StopSignal::Quit => 3,
            StopSignal::Kill => 9,
            StopSignal::Usr1 => 10,
            StopSignal::Usr2 => 12,
            StopSignal::Term => 15,
        }
    }

    /// The name, e.g. `"SIGTERM"`.
    pub fn name(&self) -> &'static str {
        match self {
            StopSignal::Term => "SIGTERM",
            StopSignal::Int => "SIGINT",
            StopSignal::Quit => "SIGQUIT",
            StopSignal::Hup => "SIGHUP",
            StopSignal::Usr1 => "SIGUSR1",
            StopSignal::Usr2 => "SIGUSR2",
            StopSignal::Kill => "SIGKILL",
        }
    }
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for StopSignal {
    type Err = String;

    /// Accepts `SIGTERM`, `TERM`, `sigterm`, `term`, … (case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        StopSignal::ALL.into_iter().find(|sig| &sig.name()[3..] == bare).ok_or_else(|| format!("unknown signal `{s}`"))
    }
}

/// Where a service's replicas may run (`placement:` in YAML).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlacementSpec {
    /// Labels a node must have for a replica to run there: every key with exactly this
    /// value. Besides the labels set with `--label` or `holdfast node label`, every node
    /// has the built-in labels `name`, `site` and `arch`.
    pub node_selector: BTreeMap<String, String>,
    /// How replicas are spread.
    pub spread: Spread,
    /// Services of the same project whose replicas never share a node with this
    /// service's (a hard rule, in both directions), in declaration order.
    pub anti_affinity: Vec<String>,
}

impl PlacementSpec {
    /// True when nothing is asked: any node, spread over nodes.
    pub fn is_default(&self) -> bool {
        self == &PlacementSpec::default()
    }
}

/// How replicas of a service are spread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Spread {
    /// Over nodes: two replicas share a node only when no other node may take one.
    #[default]
    Nodes,
    /// Over sites first (the site with the fewest replicas of the service), then over
    /// the nodes of a site.
    Sites,
}

impl Spread {
    /// Every mode, in documentation order.
    pub const ALL: [Spread; 2] = [Spread::Nodes, Spread::Sites];

    /// The spelling used in YAML and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Spread::Nodes => "nodes",
            Spread::Sites => "sites",
        }
    }
}

impl fmt::Display for Spread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Spread {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Spread::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| format!("unknown spread `{s}`"))
    }
}

/// One HTTP route: requests for `host` under `path` go to a service's port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    /// Lowercase DNS host name, optionally starting with `*.`.
    pub host: String,
    /// Path prefix starting with `/`.
    pub path: String,
    /// Target service name.
    pub service: String,
    /// Name of a port declared by the target service.
    pub port: String,
    /// HTTPS on the edge nodes: none (HTTP only), a certificate and key from the
    /// project's secrets, or automatic (ACME). Absent in state written before it existed.
    #[serde(default, skip_serializing_if = "RouteTls::is_none")]
    pub tls: RouteTls,
    /// Answer plain-HTTP requests on the edge with a permanent redirect to HTTPS
    /// (`https_redirect: true`; needs `tls`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub https_redirect: bool,
    /// How long a request may wait for the backend's response head (`timeout: 30s`);
    /// `None`: [`DEFAULT_ROUTE_TIMEOUT_MS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// Default request timeout of a route (60 s, as nginx's `proxy_read_timeout`).
pub const DEFAULT_ROUTE_TIMEOUT_MS: u64 = 60_000;
/// Largest route `timeout` (1 hour).
pub const MAX_ROUTE_TIMEOUT_MS: u64 = 3_600_000;

/// A route's certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteTls {
    /// HTTP only (no `tls:` field).
    #[default]
    None,
    /// `tls: auto`: ordered and renewed by the cluster (ACME HTTP-01).
    Auto,
    /// `tls: { cert: <secret>, key: <secret> }`: PEM certificate chain and private key
    /// from two of the project's declared secrets.
    Secrets { cert: String, key: String },
}

impl RouteTls {
    /// True for HTTP only.
    pub fn is_none(&self) -> bool {
        matches!(self, RouteTls::None)
    }
}

/// Default `ttl` of a zone's answers (seconds): short, so clients leave a dead edge soon.
pub const DEFAULT_ZONE_TTL: u32 = 15;
/// Largest zone or record `ttl` (one day).
pub const MAX_ZONE_TTL: u32 = 86_400;

/// One authoritative zone, delegated to the edge nodes (`ns1`, `ns2`, ... glue).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneSpec {
    /// Lowercase zone apex without a trailing dot, e.g. `yodangang.express`.
    pub name: String,
    /// TTL of every answer (seconds), including the edge addresses of routed hosts.
    pub ttl: u32,
    /// Static records.
    pub records: Vec<RecordSpec>,
}

/// A static record of a zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordSpec {
    /// Owner name relative to the zone: `@` for the apex, `www`, `a.b`, or `*`/`*.x`.
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: RecordType,
    /// The record's data in zone-file form, canonical: `192.0.2.1`, `2001:db8::1`,
    /// `target.example.net.`, `10 mail.example.net.`, `any text`,
    /// `10 5 5060 sip.example.net.`, `0 issue "letsencrypt.org"`.
    pub value: String,
    /// Overrides the zone's `ttl` for this record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
}

/// Static record types a zone may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RecordType {
    A,
    Aaaa,
    Cname,
    Mx,
    Txt,
    Srv,
    Caa,
}

impl RecordType {
    pub const ALL: [RecordType; 7] = [
        RecordType::A,
        RecordType::Aaaa,
        RecordType::Cname,
        RecordType::Mx,
        RecordType::Txt,
        RecordType::Srv,
        RecordType::Caa,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::Aaaa => "AAAA",
            RecordType::Cname => "CNAME",
            RecordType::Mx => "MX",
            RecordType::Txt => "TXT",
            RecordType::Srv => "SRV",
            RecordType::Caa => "CAA",
        }
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RecordType {
    type Err = String;

    /// Accepts any case: `A`, `aaaa`, `Cname`, …
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RecordType::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown record type `{s}`"))
    }
}
