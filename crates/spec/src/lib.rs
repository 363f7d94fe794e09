//! `holdfast-spec` owns the user's YAML spec: parsing it (with
//! serde-saphyr), validating it into the canonical typed [`Stack`], and
//! precise diagnostics that name file, line, column, field path, what is
//! wrong and what would be valid.
//!
//! The crate is pure: the only IO is reading the spec files handed to
//! [`load_files`]. Several files (and several `---` documents in a file)
//! merge into one stack; a service defined twice, or two different
//! `project:` values, is an error naming both places. `routes:` and
//! `dns: { zones: [...] }` lists are concatenated in file order (errors name
//! each item by its index in its own document).
//!
//! Top-level sections: `project`, `services`, `routes` (host, path, service,
//! port, and on the edge `tls: auto | { cert, key }`, `https_redirect`,
//! `timeout`), `databases`, `secrets`, `jobs` and `dns` (authoritative zones
//! and their static records; [`dns`] checks and canonicalizes names and
//! values).
//!
//! ```
//! let stack = holdfast_spec::parse_str("demo.yaml", "
//! services:
//!   web:
//!     run: python3 -m http.server $PORT
//!     ports: { http: 8080 }
//! routes:
//!   - host: demo.localhost
//!     service: web
//! ").map_err(|e| e.to_string())?;
//! assert_eq!(stack.routes[0].port, "http");
//! # Ok::<(), String>(())
//! ```
#![forbid(unsafe_code)]

pub mod compose;
pub mod dns;
mod error;
pub mod image;
mod load;
mod model;
pub mod names;
mod path;
pub mod pg_params;
pub mod schedule;
mod suggest;
pub mod units;
mod validate;
mod yaml;

pub use error::{LineCol, SpecError, SpecErrorKind, SpecErrors};
pub use model::{
    Concurrency, DatabaseSpec, DbEndpoint, DbEngine, EnvValue, FileSource, JobSpec, Persistence, RecordSpec,
    RecordType, RedisOptions, RouteTls, SecretSpec, SyncLoss, ZoneSpec, DEFAULT_DB_INSTANCES, DEFAULT_JOB_TIMEOUT_MS,
    DEFAULT_ROUTE_TIMEOUT_MS, DEFAULT_ZONE_TTL, MAX_DB_INSTANCES, MAX_JOB_RETRIES, MAX_ROUTE_TIMEOUT_MS, MAX_ZONE_TTL,
    POSTGRES_PORT, REDIS_DEFAULT_USER, REDIS_PORT, SENTINEL_PORT,
};
pub use model::{
    HealthCheck, HealthSpec, PlacementSpec, Resources, RestartPolicy, RouteSpec, RunCommand, ServiceSpec, Spread,
    Stack, StopSignal, StopSpec, DEFAULT_HEALTHY_THRESHOLD, DEFAULT_HEALTH_INTERVAL_MS, DEFAULT_HEALTH_TIMEOUT_MS,
    DEFAULT_PROJECT, DEFAULT_REPLICAS, DEFAULT_ROUTE_PATH, DEFAULT_START_GRACE_MS, DEFAULT_STOP_GRACE_MS,
    DEFAULT_UNHEALTHY_THRESHOLD, MAX_REPLICAS,
};
pub use schedule::{format_utc_ms, JobSchedule};
pub use units::{
    format_bytes, format_cpu_millis, format_duration_ms, parse_cpu_millis, parse_duration_ms, parse_memory_bytes,
    UnitError,
};

/// Parses and validates one spec source; `name` is used in diagnostics.
pub fn parse_str(name: &str, text: &str) -> Result<Stack, SpecErrors> {
    parse_sources(&[(name, text)])
}

/// Parses, merges and validates several `(name, text)` spec sources, in
/// order. No sources give an empty stack in project `default`.
pub fn parse_sources<N, T>(sources: &[(N, T)]) -> Result<Stack, SpecErrors>
where
    N: AsRef<str>,
    T: AsRef<str>,
{
    let mut loader = load::Loader::new();
    for (name, text) in sources {
        loader.add_source(name.as_ref(), text.as_ref());
    }
    loader.finish()
}

/// Reads, parses, merges and validates spec files, in order. Unreadable
/// files are reported alongside every other error; the file names in
/// diagnostics are the paths as given.
pub fn load_files<P: AsRef<std::path::Path>>(paths: &[P]) -> Result<Stack, SpecErrors> {
    let mut loader = load::Loader::new();
    for path in paths {
        let path = path.as_ref();
        let name = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => loader.add_source(&name, &text),
            Err(err) => loader.add_io_error(&name, &err),
        }
    }
    loader.finish()
}

impl Stack {
    /// Re-checks every semantic rule on an already-canonical stack (as the
    /// server does for one received over the API). Errors carry the field
    /// path only, no file position.
    pub fn validate(&self) -> Result<(), Vec<SpecError>> {
        let mut sink = validate::PlainSink::default();
        validate::validate_stack(self, &mut sink);
        if sink.errors.is_empty() {
            Ok(())
        } else {
            Err(sink.errors)
        }
    }
}
