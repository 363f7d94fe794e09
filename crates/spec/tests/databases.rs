//! The `databases:` section and database URLs in `env`: a full example parses to the
//! canonical model, defaults are filled in, old JSON still loads, and every rule has a
//! one-line case with its exact diagnostic (file:line:col: path: message).

mod common;
use std::collections::BTreeMap;
use std::path::PathBuf;

use common::{check_errs_exactly, check_ok};
use holdfast_spec::{DatabaseSpec, DbEndpoint, DbEngine, EnvValue, PlacementSpec, Resources, Spread, Stack, SyncLoss};

const FULL: &str = r#"
project: demo
databases:
  db:
    engine: postgres
    instances: 3
    sync: 1
    on_sync_loss: async
    databases: [app]
    users: [app, report]
    parameters: { max_connections: "200", work_mem: 64MB, pg_stat_statements.max: 1000 }
    bin_dir: /usr/lib/postgresql/15/bin
    placement: { node_selector: { disk: ssd }, spread: sites }
    resources: { memory: 512Mi, cpu: 500m }
  cache-db: {}
services:
  web:
    run: [srv]
    env:
      PLAIN: "value"
      DATABASE_URL: { url: db }
      DATABASE_RO_URL: { url: db, endpoint: ro, user: report }
"#;

#[test]
fn full_example_parses_with_defaults() {
    let stack = check_ok(FULL);
    let db = &stack.databases["db"];
    assert_eq!(
        db,
        &DatabaseSpec {
            engine: DbEngine::Postgres,
            instances: 3,
            sync: 1,
            on_sync_loss: SyncLoss::Async,
            databases: vec!["app".into()],
            users: vec!["app".into(), "report".into()],
            parameters: BTreeMap::from([
                ("max_connections".into(), "200".into()),
                ("pg_stat_statements.max".into(), "1000".into()),
                ("work_mem".into(), "64MB".into()),
            ]),
            bin_dir: Some(PathBuf::from("/usr/lib/postgresql/15/bin")),
            placement: PlacementSpec {
                node_selector: BTreeMap::from([("disk".into(), "ssd".into())]),
                spread: Spread::Sites,
                anti_affinity: vec![],
            },
            resources: Resources { cpu_millis: Some(500), memory_bytes: Some(512 << 20) },
            redis: None,
        }
    );
    // Everything left out: one async instance, a database and a user named after it.
    assert_eq!(stack.databases["cache-db"], DatabaseSpec::new("cache-db"));
    assert_eq!(stack.databases["cache-db"].users, ["cache_db"]);
    let env = &stack.services["web"].env;
    assert_eq!(env["PLAIN"], EnvValue::Value("value".into()));
    assert_eq!(env["DATABASE_URL"], EnvValue::Url { url: "db".into(), endpoint: DbEndpoint::Rw, user: None });
    assert_eq!(
        env["DATABASE_RO_URL"],
        EnvValue::Url { url: "db".into(), endpoint: DbEndpoint::Ro, user: Some("report".into()) }
    );
    assert_eq!(env["PLAIN"].literal(), Some("value"));
    assert_eq!(env["DATABASE_URL"].literal(), None);
}

#[test]
fn users_default_to_the_databases() {
    let stack = check_ok("databases:\n  db: { databases: [one, two] }\n");
    assert_eq!(stack.databases["db"].users, ["one", "two"]);
}

#[test]
fn json_round_trips_and_literals_stay_plain_strings() -> Result<(), serde_json::Error> {
    let stack = check_ok(FULL);
    let json = serde_json::to_string(&stack)?;
    assert!(json.contains(r#""PLAIN":"value""#), "{json}");
    assert!(json.contains(r#""DATABASE_URL":{"url":"db","endpoint":"rw"}"#), "{json}");
    let back: Stack = serde_json::from_str(&json)?;
    assert_eq!(back, stack);
    Ok(())
}

#[test]
fn json_written_before_databases_still_loads() -> Result<(), serde_json::Error> {
    let old = r#"{"project":"p","services":{"w":{"run":{"argv":["srv"]},"env":{"A":"1"},"workdir":null,
        "replicas":1,"ports":{},"health":null,"resources":{"cpu_millis":null,"memory_bytes":null},
        "restart":"always","stop":{"signal":"SIGTERM","grace_ms":10000}}},"routes":[]}"#;
    let stack: Stack = serde_json::from_str(old)?;
    assert!(stack.databases.is_empty());
    assert_eq!(stack.services["w"].env["A"], EnvValue::Value("1".into()));
    // And an empty `databases` is left out again.
    assert!(!serde_json::to_string(&stack)?.contains("databases"));
    Ok(())
}

fn db(fields: &str) -> String {
    format!("databases:\n  db:\n{fields}")
}

macro_rules! exact {
    ($($name:ident: $yaml:expr => [$($expected:expr),* $(,)?];)*) => {
        $( #[test] fn $name() { check_errs_exactly(&$yaml, &[$($expected),*]) } )*
    };
}

exact! {
    unknown_engine: db("    engine: postgress\n")
        => ["demo.yaml:3:13: databases.db.engine: unknown database engine `postgress`, did you mean `postgres`? (known engines: postgres, redis)"];
    unknown_field: db("    instance: 3\n")
        => ["demo.yaml:3:5: databases.db: unknown field `instance`, did you mean `instances`? (valid fields: engine, instances, sync, on_sync_loss, databases, users, parameters, bin_dir, placement, resources, persistence, maxmemory, durability)"];
    zero_instances: db("    instances: 0\n")
        => ["demo.yaml:3:16: databases.db.instances: instances must be between 1 and 9, found 0"];
    ten_instances: db("    instances: 10\n")
        => ["demo.yaml:3:16: databases.db.instances: instances must be between 1 and 9, found 10"];
    negative_instances: db("    instances: -1\n")
        => ["demo.yaml:3:16: databases.db.instances: instances must be between 1 and 9, found -1"];
    sync_above_standbys: db("    instances: 2\n    sync: 2\n")
        => ["demo.yaml:4:11: databases.db.sync: sync 2 waits for 2 standbys, but instances: 2 has 1 standby (one member is the primary); lower sync or raise instances"];
    sync_without_standbys: db("    sync: 1\n")
        => ["demo.yaml:3:11: databases.db.sync: sync 1 waits for 1 standbys, but instances: 1 has 0 standbys (one member is the primary); lower sync or raise instances"];
    bad_on_sync_loss: db("    on_sync_loss: asinc\n")
        => ["demo.yaml:3:19: databases.db.on_sync_loss: invalid on_sync_loss `asinc`, did you mean `async`? (valid: block = commits wait for the standbys (the default), async = commits go on without them)"];
    bad_database_name: db("    databases: [App-1]\n")
        => ["demo.yaml:3:17: databases.db.databases[0]: database name `App-1` is not a valid PostgreSQL name: use lowercase letters, digits and '_', not starting with a digit, at most 63 characters, e.g. `app_1`"];
    digit_user_name: db("    users: [1app]\n")
        => ["demo.yaml:3:13: databases.db.users[0]: user name `1app` is not a valid PostgreSQL name: use lowercase letters, digits and '_', not starting with a digit, at most 63 characters, e.g. `_1app`"];
    reserved_names: db("    databases: [postgres, template1, pg_x]\n    users: [holdfast, holdfast_replication]\n")
        => [
            "demo.yaml:3:17: databases.db.databases[0]: database name `postgres` is reserved by PostgreSQL; choose another name",
            "demo.yaml:3:27: databases.db.databases[1]: database name `template1` is reserved by PostgreSQL; choose another name",
            "demo.yaml:3:38: databases.db.databases[2]: database name `pg_x` starts with `pg_`, which PostgreSQL keeps for system names",
            "demo.yaml:4:13: databases.db.users[0]: user name `holdfast` is reserved for holdfast's own superuser and replication roles",
            "demo.yaml:4:23: databases.db.users[1]: user name `holdfast_replication` is reserved for holdfast's own superuser and replication roles",
        ];
    duplicate_user: db("    users: [app, app]\n")
        => ["demo.yaml:3:18: databases.db.users[1]: `app` is listed twice (first at databases.db.users[0] (demo.yaml:3:13)); remove one"];
    empty_users: db("    users: []\n")
        => ["demo.yaml:3:12: databases.db.users: at least one user is needed, e.g. `[db]`"];
    unknown_parameter: db("    parameters: { work_memory: 64MB }\n")
        => ["demo.yaml:3:19: databases.db.parameters.work_memory: unknown PostgreSQL 15 parameter `work_memory`, did you mean `work_mem`? (extension settings are written `extension.name`)"];
    managed_parameter: db("    parameters: { port: '5433', wal_level: logical }\n")
        => [
            "demo.yaml:3:19: databases.db.parameters.port: `port` is managed by holdfast (it sets addresses, files and replication itself); remove it",
            "demo.yaml:3:33: databases.db.parameters.wal_level: `wal_level` is managed by holdfast (it sets addresses, files and replication itself); remove it",
        ];
    parameter_values: db("    parameters: { work_mem: '', search_path: \"a'b\", application_name: \"a\\nb\" }\n")
        => [
            "demo.yaml:3:29: databases.db.parameters.work_mem: the value of `work_mem` is empty: give one, or leave the parameter out",
            "demo.yaml:3:46: databases.db.parameters.search_path: the value of `search_path` cannot contain `'` (holdfast writes each value quoted)",
            "demo.yaml:3:71: databases.db.parameters.application_name: the value of `application_name` must be one line, without control characters",
        ];
    relative_bin_dir: db("    bin_dir: usr/bin\n")
        => ["demo.yaml:3:14: databases.db.bin_dir: bin_dir `usr/bin` must be an absolute path, e.g. `/usr/lib/postgresql/15/bin`"];
    anti_affinity_refused: db("    placement: { anti_affinity: [web] }\n")
        => ["demo.yaml:3:33: databases.db.placement.anti_affinity: anti_affinity is not supported for databases (members of one database never share a node anyway); remove it"];
    zero_memory: db("    resources: { memory: 0 }\n")
        => ["demo.yaml:3:26: databases.db.resources.memory: memory must be greater than 0, e.g. `256Mi`"];
    bad_database_key: "databases:\n  My_DB: {}\n"
        => ["demo.yaml:2:3: databases.My_DB: invalid database name `My_DB`: use 1-63 lowercase letters, digits and '-', starting with a letter and not ending with '-', e.g. `my-db`"];
    database_named_like_service: "services:\n  db: { run: [srv] }\n  db-ro: { run: [srv] }\ndatabases:\n  db: {}\n"
        => [
            "demo.yaml:5:3: databases.db: database `db` has the same name as service `db`; rename one (both are DNS names of the project)",
            "demo.yaml:5:3: databases.db: service `db-ro` clashes with database `db`: `db-rw`, `db-ro`, `db-r` are the database's endpoints; rename the service",
        ];
    database_defined_twice: "databases:\n  db: {}\n  db: {}\n"
        => ["demo.yaml:3:3: databases.db: database `db` is defined twice (first at demo.yaml:2:3)"];

    env_url_unknown_database: "databases:\n  main: {}\nservices:\n  web:\n    run: [srv]\n    env: { URL: { url: mian } }\n"
        => ["demo.yaml:6:24: services.web.env.URL.url: `mian` is not a database of project `default`, did you mean `main`? (databases: main)"];
    env_url_no_databases: "services:\n  web:\n    run: [srv]\n    env: { URL: { url: db } }\n"
        => ["demo.yaml:4:24: services.web.env.URL.url: `db` is not a database: project `default` defines none (add one under the top-level `databases:`)"];
    env_url_unknown_user: "databases:\n  db: {}\nservices:\n  web:\n    run: [srv]\n    env: { URL: { url: db, user: dbb } }\n"
        => ["demo.yaml:6:34: services.web.env.URL.user: `dbb` is not a user of database `db`, did you mean `db`? (users: db)"];
    env_url_unknown_key: "databases:\n  db: {}\nservices:\n  web:\n    run: [srv]\n    env: { URL: { url: db, usr: db } }\n"
        => ["demo.yaml:6:28: services.web.env.URL: unknown field `usr`, did you mean `user`? (valid fields: url, endpoint, user)"];
    env_url_bad_endpoint: "databases:\n  db: {}\nservices:\n  web:\n    run: [srv]\n    env: { URL: { url: db, endpoint: wr } }\n"
        => ["demo.yaml:6:38: services.web.env.URL.endpoint: invalid endpoint `wr`, did you mean `rw`? (valid: rw = the primary (the default), ro = replicas only, r = any member, sentinel = Redis only: the Sentinel-compatible endpoint)"];
    redis_instances_zero: db("    engine: redis\n    instances: 0\n")
        => ["demo.yaml:4:16: databases.db.instances: instances must be between 1 and 9, found 0"];
    redis_maxmemory_without_unit: db("    engine: redis\n    maxmemory: 256\n")
        => ["demo.yaml:4:16: databases.db.maxmemory: maxmemory `256` has no unit: write e.g. `256Mi` (Ki, Mi, Gi binary; K, M, G decimal)"];
    redis_maxmemory_bad_unit: db("    engine: redis\n    maxmemory: 256MB\n")
        => ["demo.yaml:4:16: databases.db.maxmemory: invalid memory quantity `256MB`: use a number with Ki, Mi, Gi, Ti (binary) or K, M, G, T (decimal), e.g. `256Mi`"];
    redis_persistence_typo: db("    engine: redis\n    persistence: aff\n")
        => ["demo.yaml:4:18: databases.db.persistence: invalid persistence `aff`, did you mean `aof`? (valid: aof = an append-only file fsynced every second (the default), rdb = periodic snapshots, none = nothing on disk)"];
    redis_durability_typo: db("    engine: redis\n    instances: 2\n    durability: replicatd\n")
        => ["demo.yaml:5:17: databases.db.durability: invalid durability `replicatd`, did you mean `replicated`? (valid: none = a write is acknowledged by the master alone (the default), replicated = once a replica has it too)"];
    redis_durability_without_replica: db("    engine: redis\n    durability: replicated\n")
        => ["demo.yaml:4:17: databases.db.durability: durability: replicated acknowledges a write once a replica has it, but instances: 1 has no replica; raise instances to at least 2 or use durability: none"];
    redis_with_postgres_fields: db("    engine: redis\n    sync: 1\n    users: [app]\n")
        => [
            "demo.yaml:4:5: databases.db.sync: `sync` does not apply to an engine `redis` database: it is a PostgreSQL setting; a Redis database takes persistence (aof | rdb | none), maxmemory and durability (none | replicated)",
            "demo.yaml:5:5: databases.db.users: `users` does not apply to an engine `redis` database: it is a PostgreSQL setting; a Redis database takes persistence (aof | rdb | none), maxmemory and durability (none | replicated)",
        ];
    postgres_with_redis_fields: db("    maxmemory: 1Gi\n")
        => ["demo.yaml:3:5: databases.db.maxmemory: `maxmemory` does not apply to an engine `postgres` database: it is a Redis setting (`engine: redis`); a PostgreSQL database takes sync, on_sync_loss, databases, users and parameters"];
    redis_endpoint_names: "services:\n  cache-sentinel: { run: [srv] }\ndatabases:\n  cache: { engine: redis }\n"
        => ["demo.yaml:4:3: databases.cache: service `cache-sentinel` clashes with database `cache`: `cache-ro`, `cache-r`, `cache-sentinel` are the database's endpoints; rename the service"];
    env_url_redis_endpoint: "databases:\n  cache: { engine: redis }\n  db: {}\nservices:\n  web:\n    run: [srv]\n    env: { A: { url: db, endpoint: sentinel }, B: { url: cache, user: app } }\n"
        => [
            "demo.yaml:7:36: services.web.env.A.endpoint: database `db` (PostgreSQL) has no `sentinel` endpoint (endpoints: rw, ro, r)",
            "demo.yaml:7:71: services.web.env.B.user: `app` is not a user of database `cache` (users: default)",
        ];
    env_url_missing_url: "databases:\n  db: {}\nservices:\n  web:\n    run: [srv]\n    env: { URL: { user: db } }\n"
        => ["demo.yaml:6:17: services.web.env.URL: missing required field `url`: the database to connect to, e.g. `{ url: db }`"];
}

#[test]
fn redis_example_parses_with_defaults() {
    let stack = check_ok(
        "databases:\n  cache:\n    engine: redis\n    instances: 3\n    persistence: rdb\n    maxmemory: 256Mi\n    durability: replicated\n  plain: { engine: redis }\nservices:\n  web:\n    run: [srv]\n    env: { REDIS_URL: { url: cache }, SENTINEL: { url: cache, endpoint: sentinel } }\n",
    );
    let cache = &stack.databases["cache"];
    assert_eq!(cache.engine, DbEngine::Redis);
    assert_eq!((cache.instances, cache.sync), (3, 1), "durability: replicated is sync 1");
    assert_eq!(cache.users, vec!["default".to_string()]);
    assert!(cache.databases.is_empty());
    assert_eq!(
        cache.redis,
        Some(holdfast_spec::RedisOptions { persistence: holdfast_spec::Persistence::Rdb, maxmemory: Some(256 << 20) })
    );
    let plain = &stack.databases["plain"];
    assert_eq!((plain.instances, plain.sync), (1, 0));
    assert_eq!(plain.redis_options().persistence, holdfast_spec::Persistence::Aof);
    assert_eq!(DbEngine::Redis.endpoint_name("cache", DbEndpoint::Rw), "cache");
    assert_eq!(DbEngine::Redis.endpoint_name("cache", DbEndpoint::Sentinel), "cache-sentinel");
    assert_eq!(DbEngine::Redis.port(DbEndpoint::Sentinel), 26379);
    stack.validate().expect("the canonical form validates");
}

/// `Stack::validate` (a stack received over the API) checks the new fields too.
#[test]
fn validate_covers_databases_and_urls() {
    let mut stack = check_ok(FULL);
    if let Some(db) = stack.databases.get_mut("db") {
        db.instances = 0;
        db.users.push("Bad".into());
        db.parameters.insert("listen_addresses".into(), "*".into());
    }
    if let Some(web) = stack.services.get_mut("web") {
        web.env.insert("X".into(), EnvValue::Url { url: "nope".into(), endpoint: DbEndpoint::R, user: None });
    }
    let errors: Vec<String> = match stack.validate() {
        Ok(()) => vec![],
        Err(e) => e.iter().map(|e| e.to_string()).collect(),
    };
    assert_eq!(
        errors,
        [
            "services.web.env.X.url: `nope` is not a database of project `demo` (databases: cache-db, db)",
            "databases.db.instances: instances must be between 1 and 9, found 0",
            "databases.db.users[2]: user name `Bad` is not a valid PostgreSQL name: use lowercase letters, digits and '_', not starting with a digit, at most 63 characters, e.g. `bad`",
            "databases.db.parameters.listen_addresses: `listen_addresses` is managed by holdfast (it sets addresses, files and replication itself); remove it",
        ]
    );
}
