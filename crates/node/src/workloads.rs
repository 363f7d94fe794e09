//! From the replicated state to this node's agent: which instances run here, with what.
//!
//! [`desired_instances`] is pure (tested below); [`run`] feeds its result to the agent
//! whenever a new state is applied.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use holdfast_agent::{
    HealthConfig, HealthProbe, InstanceId, InstanceSpec, Limits, RestartPolicy, SecretTarget, SecretUse,
};
use holdfast_spec::{EnvValue, HealthCheck, ServiceSpec};
use holdfast_state::ClusterState;
use tokio_util::sync::CancellationToken;

use crate::NodeContext;

/// The port whose listen port is put in `PORT`: the only one, else `http`, else the
/// first by name.
pub fn primary_port(spec: &ServiceSpec) -> Option<&str> {
    if spec.ports.contains_key("http") && spec.ports.len() > 1 {
        return Some("http");
    }
    spec.ports.keys().next().map(String::as_str)
}

/// Named ports in the order the agent hands them out (primary first).
fn port_order(spec: &ServiceSpec) -> Vec<String> {
    let mut ports: Vec<String> = Vec::new();
    if let Some(p) = primary_port(spec) {
        ports.push(p.to_string());
    }
    ports.extend(spec.ports.keys().filter(|k| Some(k.as_str()) != primary_port(spec)).cloned());
    ports
}

/// How long a restarted node that reached the leader waits for its state to catch up
/// before it runs what it has.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(30);

/// How a job run reaches this node's API (for `holdfast` inside a run with a token).
#[derive(Debug, Clone, Default)]
pub struct ApiAccess {
    /// `https://<this node's listen address>`.
    pub server: String,
    /// The cluster CA certificate file.
    pub ca: std::path::PathBuf,
}

/// The secret name under which the agent asks for a run's job token (never stored; the
/// node mints it from the cluster key each time the run starts).
pub const JOB_TOKEN_SECRET: &str = "@job-token";

/// Every active job run placed on `node`, as the agent runs it: `<job>.run-<id>` at its
/// attempt, restart `never`, with `HOLDFAST_JOB`, `HOLDFAST_RUN`, `HOLDFAST_RUN_SLOT_MS`
/// and, for a job with `secrets_write`, `HOLDFAST_SERVER`, `HOLDFAST_CA` and its
/// `HOLDFAST_TOKEN`.
pub fn desired_runs(state: &ClusterState, node: u64, api: &ApiAccess) -> Vec<InstanceSpec> {
    let mut out = Vec::new();
    for (job, rec, run) in holdfast_state::jobs::runs_on(state, node) {
        let j = &rec.spec;
        let as_service = ServiceSpec {
            env: j.env.clone(),
            workdir: j.workdir.clone(),
            resources: j.resources.clone(),
            restart: holdfast_spec::RestartPolicy::Never,
            ..ServiceSpec::new(j.run.clone())
        };
        let service = holdfast_state::jobs::instance_service(job);
        let mut spec =
            instance_spec(&service, run.id as u32, run.generation, &rec.project, &as_service, &state.desired.databases);
        spec.secrets = secret_uses(state, &rec.project, &j.env, &j.files, None);
        spec.env.insert("HOLDFAST_JOB".into(), job.to_string());
        spec.env.insert("HOLDFAST_RUN".into(), run.id.to_string());
        spec.env.insert("HOLDFAST_ATTEMPT".into(), run.attempt.to_string());
        if let Some(slot) = run.slot_ms {
            spec.env.insert("HOLDFAST_RUN_SLOT_MS".into(), slot.to_string());
        }
        if !j.secrets_write.is_empty() {
            spec.env.insert("HOLDFAST_SERVER".into(), api.server.clone());
            spec.env.insert("HOLDFAST_CA".into(), api.ca.display().to_string());
            spec.secrets.push(SecretUse {
                secret: format!("{JOB_TOKEN_SECRET}/{job}"),
                version: run.id,
                target: SecretTarget::Env("HOLDFAST_TOKEN".into()),
            });
        }
        out.push(spec);
    }
    out
}

/// The log files (names in the agent's log directory) of job runs the state no longer
/// keeps in their job's history: `<job>.run-<id>.log` and its rotated `.log.N` copies.
pub fn forgotten_run_logs(state: &ClusterState, names: &[String]) -> Vec<String> {
    names
        .iter()
        .filter(|name| {
            let Some((job, rest)) = name.split_once(".run-") else { return false };
            let Some((id, _)) = rest.split_once(".log") else { return false };
            let Ok(id) = id.parse::<u64>() else { return false };
            !state.runs.get(job).is_some_and(|r| r.runs.iter().any(|x| x.id == id))
        })
        .cloned()
        .collect()
}

/// Whether this node's job runs may go on: a node cut off from the quorum for as long as
/// the leader takes to call a node down stops them, so the retry the leader starts
/// elsewhere (10 s later at the earliest) never runs beside the attempt it replaces. A
/// lease never renewed since this start (`None`) does not stop them: nothing was cut off.
pub fn runs_may_go_on(lease_age: Option<Duration>, down_after: Duration) -> bool {
    lease_age.is_none_or(|age| age <= down_after)
}

/// Removes the logs of runs forgotten by the state (at most once a minute).
fn prune_run_logs(ctx: &NodeContext, state: &ClusterState, last: &mut Option<tokio::time::Instant>) {
    if last.is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
        return;
    }
    *last = Some(tokio::time::Instant::now());
    let dir = ctx.data_dir.join("agent").join("logs");
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    let names: Vec<String> = entries.flatten().filter_map(|e| e.file_name().into_string().ok()).collect();
    for name in forgotten_run_logs(state, &names) {
        if let Err(e) = std::fs::remove_file(dir.join(&name)) {
            tracing::debug!(file = %name, error = %e, "cannot remove a forgotten run's log");
        }
    }
}

/// Every instance placed on `node` (and every replica moving to it), as the agent runs
/// it, except those the leader has fenced as stale (`fenced`: (instance, generation)).
pub fn desired_instances(state: &ClusterState, node: u64, fenced: &BTreeSet<(InstanceId, u64)>) -> Vec<InstanceSpec> {
    let mut out = Vec::new();
    for placed in state.instances_on(node) {
        let Some(record) = state.desired.services.get(&placed.service) else { continue };
        let id = InstanceId::new(placed.service.clone(), placed.replica);
        if fenced.contains(&(id, placed.generation)) {
            continue;
        }
        let mut spec = instance_spec(
            &placed.service,
            placed.replica,
            placed.generation,
            &record.project,
            &record.spec,
            &state.desired.databases,
        );
        // Replicas a roll has not reached yet keep the secret versions they started with.
        let kept = record.rollout.as_ref().filter(|r| placed.replica >= r.rolled).map(|r| &r.secrets);
        spec.secrets = secret_uses(state, &record.project, &record.spec.env, &record.spec.files, kept);
        for (k, v) in crate::network::service_env(state, &record.project) {
            spec.env.entry(k).or_insert(v);
        }
        out.push(spec);
    }
    out
}

/// The secrets a service's instances read, at the current version of each (a new
/// version comes with a new generation, so the instances roll onto it), or at the
/// version in `kept` for a replica a roll has not reached yet.
fn secret_uses(
    state: &ClusterState,
    project: &str,
    env: &BTreeMap<String, EnvValue>,
    files: &BTreeMap<String, holdfast_spec::FileSource>,
    kept: Option<&BTreeMap<String, u64>>,
) -> Vec<SecretUse> {
    let version = |name: &str| {
        let key = holdfast_state::secrets::key(project, name);
        let current = state.secrets.get(&key).and_then(|r| r.current()).map_or(0, |c| c.version);
        let v = kept.and_then(|k| k.get(&key)).copied().unwrap_or(current);
        (key, v)
    };
    let env = env.iter().filter_map(|(var, v)| match v {
        EnvValue::Secret { secret } => Some((secret, SecretTarget::Env(var.clone()))),
        _ => None,
    });
    let files = files.iter().map(|(path, f)| (&f.secret, SecretTarget::File(path.into())));
    env.chain(files)
        .map(|(name, target)| {
            let (secret, version) = version(name);
            SecretUse { secret, version, target }
        })
        .collect()
}

fn instance_spec(
    service: &str,
    replica: u32,
    generation: u64,
    project: &str,
    spec: &ServiceSpec,
    databases: &BTreeMap<String, holdfast_state::model::DatabaseRecord>,
) -> InstanceSpec {
    let mut env: BTreeMap<String, String> = spec
        .env
        .iter()
        .filter_map(|(k, v)| {
            let value = match v {
                EnvValue::Value(v) => Some(v.clone()),
                // Validated at deploy: the database and user exist.
                EnvValue::Url { url, endpoint, user } => {
                    databases.get(url).and_then(|rec| crate::databases::url::url(url, rec, *endpoint, user.as_deref()))
                }
                // By reference, in `secrets` (see `secret_uses`): opened by the agent.
                EnvValue::Secret { .. } => None,
            };
            value.map(|v| (k.clone(), v))
        })
        .collect();
    env.entry("HOLDFAST_PROJECT".into()).or_insert_with(|| project.to_string());
    InstanceSpec {
        id: InstanceId::new(service, replica),
        generation,
        argv: spec.run.argv(),
        env,
        workdir: spec.workdir.clone(),
        ports: port_order(spec),
        health: spec.health.as_ref().map(|h| HealthConfig {
            check: match &h.check {
                HealthCheck::Http { port, path } => HealthProbe::Http { port: port.clone(), path: path.clone() },
                HealthCheck::Tcp { port } => HealthProbe::Tcp { port: port.clone() },
                HealthCheck::Exec { command } => HealthProbe::Exec { argv: command.argv() },
            },
            interval: Duration::from_millis(h.interval_ms),
            timeout: Duration::from_millis(h.timeout_ms),
            healthy_threshold: h.healthy_threshold,
            unhealthy_threshold: h.unhealthy_threshold,
            start_grace: Duration::from_millis(h.start_grace_ms),
        }),
        limits: Limits { cpu_millis: spec.resources.cpu_millis, memory_bytes: spec.resources.memory_bytes },
        restart: match spec.restart {
            holdfast_spec::RestartPolicy::Always => RestartPolicy::Always,
            holdfast_spec::RestartPolicy::OnFailure => RestartPolicy::OnFailure,
            holdfast_spec::RestartPolicy::Never => RestartPolicy::Never,
        },
        stop_signal: spec.stop.signal.number(),
        stop_grace: Duration::from_millis(spec.stop.grace_ms),
        run_as: None,
        stop_main_only: false,
        secrets: Vec::new(),
        image: spec.image.as_ref().map(|reference| holdfast_agent::oci::OciImage {
            reference: reference.clone(),
            // Plain HTTP only to a registry on this machine's loopback, as Docker does.
            insecure: holdfast_spec::image::parse_image(reference).is_ok_and(|r| r.registry_is_loopback()),
        }),
    }
}

/// Hands the agent its desired instances after every applied change and every fencing
/// verdict from the leader.
///
/// After a restart the local state may be old (the machine was off while its replicas
/// were placed elsewhere), so nothing *new* is started until this node's state has caught
/// up with the revision the leader reported in its first heartbeat answer, or the node
/// leads itself. Without any leader for `down_after` it runs what it last knew (a cluster
/// without quorum keeps serving). Instances still running from before are left alone
/// meanwhile; the leader fences any that are superseded.
pub async fn run(ctx: NodeContext, cancel: CancellationToken) {
    let server = if ctx.listen.ip().is_unspecified() {
        std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), ctx.listen.port())
    } else {
        ctx.listen
    };
    let api = ApiAccess { server: format!("https://{server}"), ca: ctx.data_dir.join("ca.pem") };
    let mut pruned_at = None;
    let mut runs_stopped = false;
    let mut states = ctx.control.subscribe();
    let mut fenced = ctx.fenced.subscribe();
    let mut members = ctx.dbs.subscribe();
    let mut contact = ctx.leader_contact.subscribe();
    let started = tokio::time::Instant::now();
    let no_leader_limit = Duration::from_millis(ctx.control.state().settings.down_after_ms);
    let mut contact_at: Option<tokio::time::Instant> = None;
    loop {
        if ctx.control.is_leader()
            && (ctx.dbs.settled(&states.borrow(), ctx.identity.node_id) || started.elapsed() > Duration::from_secs(5))
        {
            break;
        }
        let leader_revision = *contact.borrow_and_update();
        let local_revision = states.borrow_and_update().revision;
        if let Some(rev) = leader_revision {
            let at = *contact_at.get_or_insert_with(tokio::time::Instant::now);
            // Database members have had a pass with the lease known (their postgres is
            // in the set handed over below, or deliberately not).
            let members_settled =
                ctx.dbs.settled(&states.borrow(), ctx.identity.node_id) || at.elapsed() > Duration::from_secs(5);
            if local_revision >= rev && members_settled {
                break;
            }
            if at.elapsed() > CATCH_UP_LIMIT {
                tracing::warn!(
                    local = local_revision,
                    leader = rev,
                    "state still behind the leader's; running what this node knows"
                );
                break;
            }
        } else if started.elapsed() > no_leader_limit {
            tracing::warn!(after = ?no_leader_limit, "no leader reachable: running the instances of the last state this node knows");
            break;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = contact.changed() => {}
            _ = states.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    loop {
        let state = states.borrow_and_update().clone();
        let fence = fenced.borrow_and_update().clone();
        members.borrow_and_update();
        let mut desired = desired_instances(&state, ctx.identity.node_id, &fence);
        let runs = desired_runs(&state, ctx.identity.node_id, &api);
        let has_runs = !runs.is_empty();
        let down_after = Duration::from_millis(state.settings.down_after_ms);
        if runs_may_go_on(ctx.lease.age(state.revision), down_after) {
            desired.extend(runs);
            runs_stopped = false;
        } else if has_runs {
            if !runs_stopped {
                tracing::warn!(runs = runs.len(), after = ?down_after, "cut off from the control plane's quorum: stopping this node's job runs (the leader retries them elsewhere)");
            }
            runs_stopped = true;
        }
        prune_run_logs(&ctx, &state, &mut pruned_at);
        desired.extend(ctx.dbs.instances());
        tracing::debug!(
            revision = state.revision,
            instances = desired.len(),
            fenced = fence.len(),
            "desired instances"
        );
        let count = desired.len();
        ctx.agent.set_desired(desired);
        ctx.workers.report(
            "workload reconciler",
            crate::workers::Pass::Progress(format!("{count} instance(s) wanted here at revision {}", state.revision)),
        );
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = states.changed() => if changed.is_err() { return },
            changed = fenced.changed() => if changed.is_err() { return },
            changed = members.changed() => if changed.is_err() { return },
            // Runs here depend on the lease too: look again while there are some.
            _ = tokio::time::sleep(Duration::from_millis(500)), if has_runs => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_state::{Command, Request};

    pub(super) fn state_with(yaml: &str) -> ClusterState {
        let mut s = ClusterState::default();
        s.apply(&Request::new(Command::UpsertNode(holdfast_state::NodeRecord::new(
            7,
            "n",
            "127.0.0.1:1",
            "s",
            "amd64",
            holdfast_placement::Capacity { cpu_millis: 4000, memory_bytes: 8 << 30 },
        ))));
        let stack = holdfast_spec::parse_str("t.yaml", yaml).expect("spec parses");
        let (_, desired) = holdfast_state::plan::plan_deploy(&s, &stack).expect("plan");
        s.apply(&Request::new(Command::SetDesired { expected_revision: s.revision, desired }));
        s
    }

    #[test]
    fn maps_every_replica_on_this_node() {
        let s = state_with(
            "project: p\nservices:\n  web:\n    run: 'echo hi'\n    replicas: 2\n    ports: {admin: 9000, http: 8080}\n    resources: {memory: 64Mi, cpu: 0.5}\n    stop: {signal: SIGINT, grace: 3s}\n",
        );
        let got = desired_instances(&s, 7, &BTreeSet::new());
        assert_eq!(got.len(), 2);
        let w0 = &got[0];
        assert_eq!(w0.id.to_string(), "web-0");
        assert_eq!(w0.argv, vec!["/bin/sh", "-c", "echo hi"]);
        assert_eq!(w0.ports, vec!["http", "admin"]);
        assert_eq!(w0.limits, Limits { cpu_millis: Some(500), memory_bytes: Some(64 << 20) });
        assert_eq!(w0.stop_signal, 2);
        assert_eq!(w0.stop_grace, Duration::from_secs(3));
        assert_eq!(w0.env.get("HOLDFAST_PROJECT").map(String::as_str), Some("p"));
        assert!(desired_instances(&s, 8, &BTreeSet::new()).is_empty());
        let fenced = BTreeSet::from([(InstanceId::new("web", 1), w0.generation)]);
        let left: Vec<String> = desired_instances(&s, 7, &fenced).iter().map(|i| i.id.to_string()).collect();
        assert_eq!(left, vec!["web-0"], "a fenced instance is not run");
    }
}

#[cfg(test)]
mod run_tests {
    use super::*;
    use holdfast_state::jobs::Run;
    use holdfast_state::{Command, Request};

    fn state() -> ClusterState {
        let mut s = super::tests::state_with(
            "project: p\nsecrets: { k: {} }\njobs:\n  refresh: { run: [x], secrets_write: [k] }\n  plain: { run: [y] }\n",
        );
        for job in ["refresh", "plain"] {
            let mut run = Run::new(0, None, "admin".into(), 1);
            s.apply(&Request::new(Command::StartRun { job: job.into(), run: run.clone() }));
            run.node = Some(7);
            run.generation = 1;
            s.apply(&Request::new(Command::PutRun { job: job.into(), attempt: 1, run }));
        }
        s
    }

    #[test]
    fn runs_placed_here_become_instances_and_only_secrets_write_gets_a_token() {
        let s = state();
        let api = ApiAccess { server: "https://127.0.0.1:7946".into(), ca: "/d/ca.pem".into() };
        let runs = desired_runs(&s, 7, &api);
        let by: BTreeMap<String, &InstanceSpec> = runs.iter().map(|r| (r.id.to_string(), r)).collect();
        assert_eq!(by.keys().collect::<Vec<_>>(), ["plain.run-0", "refresh.run-0"]);
        let r = by["refresh.run-0"];
        assert_eq!((r.generation, r.restart), (1, RestartPolicy::Never));
        assert_eq!(r.env["HOLDFAST_SERVER"], "https://127.0.0.1:7946");
        assert_eq!(
            r.secrets,
            [SecretUse {
                secret: "@job-token/refresh".into(),
                version: 0,
                target: SecretTarget::Env("HOLDFAST_TOKEN".into())
            }]
        );
        let p = by["plain.run-0"];
        assert!(p.secrets.is_empty() && !p.env.contains_key("HOLDFAST_SERVER"));
        assert!(desired_runs(&s, 8, &api).is_empty(), "another node runs nothing");
    }

    #[test]
    fn runs_stop_once_cut_off_as_long_as_the_leader_takes_to_call_a_node_down() {
        let d = Duration::from_secs(3);
        assert!(runs_may_go_on(None, d));
        assert!(runs_may_go_on(Some(Duration::from_millis(400)), d));
        assert!(runs_may_go_on(Some(d), d));
        assert!(!runs_may_go_on(Some(d + Duration::from_millis(1)), d));
    }

    #[test]
    fn only_forgotten_runs_lose_their_logs() {
        let s = state();
        let names: Vec<String> =
            ["plain.run-0.log", "plain.run-1.log", "plain.run-1.log.2", "gone.run-0.log", "web-0.log", "x.run-y.log"]
                .iter()
                .map(|n| n.to_string())
                .collect();
        assert_eq!(forgotten_run_logs(&s, &names), ["plain.run-1.log", "plain.run-1.log.2", "gone.run-0.log"]);
    }
}
