//! The `jobs:` section: a full example parses to the canonical model, and every rule has
//! a case with its exact diagnostic.

mod common;
use std::collections::BTreeMap;

use common::{check_errs_exactly, check_ok};
use holdfast_spec::{Concurrency, JobSchedule, JobSpec, RunCommand, DEFAULT_JOB_TIMEOUT_MS};

const FULL: &str = r#"
project: shop
secrets:
  oauth-key: {}
jobs:
  refresh-oauth:
    run: ["./refresh.sh"]
    schedule: "0 3 */13 * *"
    secrets_write: [oauth-key]
    retries: 3
    timeout: 10m
    concurrency: forbid
    env: { KEY: { secret: oauth-key } }
    node_selector: { arch: amd64 }
  migrate:
    run: ["./migrate"]
  tick:
    run: "date"
    every: 6h
    concurrency: replace
"#;

#[test]
fn full_example_parses() {
    let stack = check_ok(FULL);
    let r = &stack.jobs["refresh-oauth"];
    assert_eq!(r.schedule, Some(JobSchedule::Cron("0 3 */13 * *".into())));
    assert_eq!((r.retries, r.timeout_ms, r.concurrency), (3, 600_000, Concurrency::Forbid));
    assert_eq!(r.secrets_write, ["oauth-key"]);
    assert_eq!(r.node_selector, BTreeMap::from([("arch".to_string(), "amd64".to_string())]));
    let m = &stack.jobs["migrate"];
    assert_eq!(m, &JobSpec::new(RunCommand::Argv(vec!["./migrate".into()])));
    assert_eq!(m.timeout_ms, DEFAULT_JOB_TIMEOUT_MS);
    assert_eq!(stack.jobs["tick"].schedule, Some(JobSchedule::EveryMs(6 * 3_600_000)));
    assert_eq!(stack.jobs["tick"].concurrency, Concurrency::Replace);
    let json = serde_json::to_string(&stack).unwrap();
    assert_eq!(serde_json::from_str::<holdfast_spec::Stack>(&json).unwrap(), stack);
}

fn job(body: &str) -> String {
    format!("secrets:\n  key: {{}}\njobs:\n  j:\n    run: [x]\n{body}")
}

macro_rules! exact {
    ($($name:ident: $yaml:expr => [$($expected:expr),* $(,)?];)*) => {
        $( #[test] fn $name() { check_errs_exactly(&$yaml, &[$($expected),*]) } )*
    };
}

exact! {
    bad_cron_field: job("    schedule: \"61 * * * *\"\n")
        => ["demo.yaml:6:15: jobs.j.schedule: invalid cron expression `61 * * * *`: field 1 (minute) `61` is not valid: number out of bounds (valid: 0-59, `*`, lists `a,b`, ranges `a-b`, steps `*/n`)"];
    both_schedule_and_every: job("    schedule: \"@hourly\"\n    every: 1h\n")
        => ["demo.yaml:7:5: jobs.j.every: a job runs on a `schedule` (cron) or `every` interval, not both; keep one"];
    every_too_short: job("    every: 100ms\n")
        => ["demo.yaml:6:12: jobs.j.every: `every` must be between 1s and 366 days"];
    undeclared_secrets_write: job("    secrets_write: [keys]\n")
        => ["demo.yaml:6:21: jobs.j.secrets_write[0]: secret `keys` is not declared in project `default`, did you mean `key`? (declared: key)"];
    bad_concurrency: job("    concurrency: forbidden\n")
        => ["demo.yaml:6:18: jobs.j.concurrency: invalid concurrency `forbidden`, did you mean `forbid`? (valid: forbid = skip a slot while a run is going, replace = stop it and start, allow = run both)"];
    too_many_retries: job("    retries: 11\n")
        => ["demo.yaml:6:14: jobs.j.retries: retries must be between 0 and 10, found 11"];
    job_without_run: "jobs:\n  j: { every: 1h }\n"
        => ["demo.yaml:2:3: jobs.j: missing required field `run`: the command a run executes, a list such as `[\"my-server\", \"--port\", \"8080\"]` or a shell string such as `\"python3 -m http.server $PORT\"`"];
    job_named_like_a_service: "services:\n  web: { run: [x] }\njobs:\n  web: { run: [y] }\n"
        => ["demo.yaml:4:3: jobs.web: job `web` has the name of a service of this stack; jobs, services and databases need names of their own"];
    unknown_job_field: job("    replicas: 2\n")
        => ["demo.yaml:6:5: jobs.j: unknown field `replicas` (valid fields: run, env, files, workdir, resources, node_selector, schedule, every, secrets_write, retries, timeout, concurrency)"];
}
