//! Request and response bodies of the API (JSON).
use std::collections::BTreeMap;

use holdfast_spec::{PlacementSpec, RouteSpec, Stack};
use holdfast_state::Plan;
use serde::{Deserialize, Serialize};

/// `POST /v1/deploy`: apply (or with `dry_run`, only plan) a whole project.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeployRequest {
    pub stack: Stack,
    #[serde(default)]
    pub dry_run: bool,
}

/// `POST /v1/services/{name}/scale`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleRequest {
    pub replicas: u64,
}

/// The answer to every change: what was (or would be) done.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanResponse {
    pub plan: Plan,
    /// False for a dry run or a plan with nothing to do.
    pub applied: bool,
    /// The state revision after the change (or the current one when nothing was applied).
    pub revision: u64,
}

/// An error answer: `{"error": "..."}` with a 4xx/5xx status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusResponse {
    pub node: NodeSummary,
    pub control_plane: ControlPlaneSummary,
    pub services: Vec<ServiceView>,
    pub routes: Vec<RouteSpec>,
    /// Plain-language problems a user should know about.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeSummary {
    pub id: u64,
    pub name: String,
    pub addr: String,
    pub pid: u32,
    pub version: String,
    pub cgroups: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlPlaneSummary {
    pub leader: Option<u64>,
    pub term: u64,
    pub role: String,
    pub voters: usize,
    pub revision: u64,
    pub last_applied: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceView {
    pub name: String,
    pub project: String,
    pub replicas: u32,
    pub ready: u32,
    pub generation: u64,
    /// The stable service address (same on every node).
    pub address: String,
    /// The stable named ports of the service.
    pub ports: BTreeMap<String, u16>,
    /// Where its replicas may run (node selector, spread, anti-affinity).
    #[serde(default)]
    pub placement: PlacementSpec,
    /// The image its instances run as containers, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub instances: Vec<InstanceView>,
    /// A roll in progress (restart, new secret version), in words: how far, and what it
    /// waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceView {
    /// `web-0`.
    pub name: String,
    pub replica: u32,
    pub node: String,
    pub generation: u64,
    /// starting, ready, unready, backoff, crash-loop, stopping, exited, pending.
    pub state: String,
    pub ready: bool,
    pub pid: Option<u32>,
    pub restarts: u32,
    /// The instance's own listen ports (what `PORT` / `PORT_<NAME>` are set to).
    pub ports: BTreeMap<String, u16>,
    pub started_at_ms: Option<u64>,
    pub last_exit: Option<ExitView>,
    pub last_health_error: Option<String>,
    pub adopted: bool,
    pub memory_bytes: Option<u64>,
    pub cpu_usage_ns: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExitView {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    pub at_ms: u64,
    pub description: String,
}

/// `POST /v1/tokens`: create a join token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRequest {
    /// How long the token is valid, in milliseconds.
    pub ttl_ms: u64,
}

/// The created token: pass `token` to `holdfast join` on the new machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    pub token: String,
    pub expires_at_ms: u64,
    /// The address the token tells new nodes to join through.
    pub join_addr: String,
}

/// `GET /v1/nodes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodesResponse {
    pub nodes: Vec<NodeView>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeView {
    pub id: u64,
    pub name: String,
    pub addr: String,
    pub site: String,
    pub arch: String,
    /// leader, voter, learner, or none (not yet in the Raft membership).
    pub role: String,
    /// alive, suspect, down; `cordoned` and `draining` are separate.
    pub state: String,
    pub cordoned: bool,
    /// Its replicas are being moved away, one at a time.
    #[serde(default)]
    pub draining: bool,
    /// Milliseconds since the leader last heard from the node.
    pub last_seen_ms: Option<u64>,
    /// Service replicas and database members placed on the node.
    pub instances: usize,
    pub cpu_reserved_millis: u64,
    pub cpu_capacity_millis: u64,
    pub memory_reserved_bytes: u64,
    pub memory_capacity_bytes: u64,
    /// Every label node selectors match: the built-ins `name`, `site`, `arch` and the
    /// labels set with `--label` or `holdfast node label`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Being removed (`holdfast node rm`): drained, then removed by the leader.
    #[serde(default)]
    pub removing: bool,
    /// Raft log entries the node is behind the leader (answered by the leader only).
    #[serde(default)]
    pub lag_entries: Option<u64>,
    /// For a learner, why it does not vote yet (e.g. "alive for 2100ms of the 5000ms a
    /// new voter needs"); absent once it may vote (voters are chosen 1, 3 or 5 at a time).
    #[serde(default)]
    pub not_voting_because: Option<String>,
}

/// `POST /v1/nodes/{name}/labels`: set and remove user labels of a node.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeLabelsRequest {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// The node's labels after the change, and the replicas it moved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeLabelsResponse {
    pub node: String,
    /// Every label of the node, built-ins included.
    pub labels: BTreeMap<String, String>,
    /// False when the node already had these labels.
    pub changed: bool,
    /// Replicas moved because of the change, e.g. `web-1: n2 -> n1`.
    pub moves: Vec<String>,
    pub revision: u64,
}

/// `GET /v1/cluster/settings`, and the answer of `PUT`: the cluster's failure-detection
/// timing in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsView {
    pub heartbeat_ms: u64,
    pub suspect_after_ms: u64,
    pub down_after_ms: u64,
    pub voter_replace_after_ms: u64,
    #[serde(default)]
    pub promote_after_ms: u64,
}

/// `PUT /v1/cluster/settings`: the settings to change (absent ones stay).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsChange {
    pub heartbeat_ms: Option<u64>,
    pub suspect_after_ms: Option<u64>,
    pub down_after_ms: Option<u64>,
    pub voter_replace_after_ms: Option<u64>,
    #[serde(default)]
    pub promote_after_ms: Option<u64>,
}

/// Answer of cordon / drain / uncordon / node rm.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeActionResponse {
    pub message: String,
    pub revision: u64,
}

/// One background loop of a node (a controller, the heartbeats, the links, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerView {
    pub name: String,
    /// running, idle (e.g. a leader duty on a follower), failing.
    pub state: String,
    /// Unix ms of the last pass, of the last pass that changed something, of the last error.
    pub last_run_ms: Option<u64>,
    pub last_progress_ms: Option<u64>,
    pub last_error: Option<String>,
    pub last_error_ms: Option<u64>,
    /// Errors in a row (0 once a pass succeeds).
    pub consecutive_errors: u32,
    pub runs: u64,
    /// What the last pass did, in a few words.
    pub detail: String,
}

/// `GET /v1/workers`: the background loops of the node that answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkersResponse {
    pub node: String,
    pub workers: Vec<WorkerView>,
}

/// One event (`holdfast events`). Events derived from the replicated log are recorded
/// by every node under the same `key` (`r<log index>.<n>`); a leader change by every
/// node that saw it (`leader.<term>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventView {
    pub key: String,
    /// Milliseconds since the Unix epoch when the (earliest) node recorded it.
    pub at_ms: u64,
    /// `info` or `warn`.
    pub level: String,
    /// A stable word for scripts: `node-down`, `failover`, `switchover`, `leader`, ...
    pub kind: String,
    /// What it is about: `node n2`, `database db`, `service web`, `cluster`.
    pub subject: String,
    pub message: String,
}

/// `GET /v1/events?since_ms=&limit=` (every node's journal, merged) and
/// `GET /cluster/events?since_ms=` (one node's).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EventsResponse {
    /// Oldest first.
    pub events: Vec<EventView>,
    /// Nodes whose journal could not be read this time (their events may be missing if
    /// no other node recorded them).
    #[serde(default)]
    pub unreachable: Vec<String>,
}

/// `GET /v1/databases`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatabasesResponse {
    pub databases: Vec<DatabaseView>,
    /// The answering node's lease: whether it may serve as a primary and forward writes
    /// now (it reaches the control plane's quorum with a current state), and how long
    /// ago it was last renewed.
    #[serde(default)]
    pub lease: Option<LeaseView>,
}

/// A node's database lease (see `DatabasesResponse::lease`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseView {
    pub node: String,
    pub held: bool,
    /// Milliseconds since the last renewal that counts (`None`: never renewed).
    pub renewed_ms_ago: Option<u64>,
}

/// One managed database as the cluster runs it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatabaseView {
    pub name: String,
    pub project: String,
    pub engine: String,
    pub instances: u32,
    /// `ANY sync` standbys must confirm a commit (0: asynchronous).
    pub sync: u32,
    pub on_sync_loss: String,
    pub term: u64,
    /// The member holding `term`, and its node.
    pub primary: u32,
    pub primary_node: String,
    /// `rw`, `ro`, `r` → `address:5432`.
    pub endpoints: BTreeMap<String, String>,
    pub members: Vec<DbMemberView>,
    /// A switchover in progress: `requested` or `fencing`, and its target.
    pub switchover: Option<String>,
    /// Members dropped from the synchronous list that a failover still counts until the
    /// primary runs without them (each member's `sync_candidate` says who is listed).
    #[serde(default)]
    pub sync_leaving: Vec<u32>,
    /// What losing each member's node would cost now, e.g. `n1: loses 0 acknowledged commits`.
    pub losing: Vec<String>,
    pub warnings: Vec<String>,
}

/// One member.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DbMemberView {
    pub member: u32,
    pub node: String,
    /// As its node reports: primary, replica, starting, stopped, fenced, failed; `unknown`
    /// when its node has not reported it.
    pub role: String,
    pub term: u64,
    pub timeline: u32,
    pub lsn: u64,
    pub replay_lsn: u64,
    /// Bytes behind the primary's flushed WAL (replicas).
    pub lag_bytes: Option<u64>,
    pub streaming: bool,
    pub answering: bool,
    /// A synchronous standby candidate (`sync > 0`, not the primary).
    pub sync_candidate: bool,
    /// A changed setting waits for a restart (the leader restarts members one at a time).
    #[serde(default)]
    pub pending_restart: bool,
    pub detail: String,
}

/// `GET /v1/databases/{name}/url`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatabaseUrlResponse {
    pub url: String,
}

/// `POST /v1/databases/{name}/switchover`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SwitchoverRequest {
    /// The node whose member becomes primary; `None`: the most advanced replica.
    pub to: Option<String>,
}

/// The answer to a switchover request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SwitchoverResponse {
    pub database: String,
    /// The term the switchover was asked in; it is done when the term is higher.
    pub from_term: u64,
}

/// `PUT /v1/secrets/{project}/{name}` answer (the body was the raw value).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretSetResponse {
    /// `project/name`.
    pub secret: String,
    pub version: u64,
    /// Bytes stored.
    pub size: u32,
    /// Services whose instances roll onto the new version.
    pub rolling: Vec<String>,
    pub revision: u64,
}

/// One secret in `GET /v1/secrets` (never a value).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretView {
    /// `project/name`.
    pub secret: String,
    pub version: u64,
    pub updated_at_ms: u64,
    pub updated_by: String,
    /// Services reading it.
    pub used_by: Vec<String>,
}

/// `GET /v1/secrets`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretsResponse {
    pub secrets: Vec<SecretView>,
    /// The id of the key secrets are sealed under, if any was set.
    pub key_id: Option<String>,
}

/// One version in `GET /v1/secrets/{project}/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretVersionView {
    pub version: u64,
    pub size: u32,
    pub set_at_ms: u64,
    pub set_by: String,
    /// `current`, `previous` (still readable) or `retired`.
    pub state: String,
}

/// `GET /v1/secrets/{project}/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretHistoryResponse {
    pub secret: String,
    pub used_by: Vec<String>,
    /// Newest first.
    pub versions: Vec<SecretVersionView>,
}

/// `POST /v1/secrets-key/rotate` body, for a cluster whose nodes read the key from
/// `--secrets-key-file` (without a body the leader makes the new key).
#[derive(Clone, Serialize, Deserialize)]
pub struct SecretKeyRotate {
    /// The new key as its file holds it (`hfkey1:…`).
    pub new_key: String,
}

/// `POST /v1/secrets-key/rotate` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretKeyRotated {
    /// The key id secrets were sealed under (none before the first secret).
    pub from: Option<String>,
    pub to: String,
    /// Versions resealed.
    pub resealed: usize,
    pub revision: u64,
}

/// `POST /v1/acl/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiTokenRequest {
    /// `admin`, `read`, `project:<name>` or `secrets:<project>/<name>,...`.
    pub scope: String,
    pub name: String,
}

/// One API token (never its secret, except once in [`ApiTokenCreated`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiTokenView {
    pub id: String,
    pub name: String,
    pub scope: String,
    pub created_at_ms: u64,
}

/// `POST /v1/acl/tokens` answer: the token, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiTokenCreated {
    pub token: String,
    #[serde(flatten)]
    pub view: ApiTokenView,
}

/// `GET /v1/acl/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiTokensResponse {
    pub tokens: Vec<ApiTokenView>,
}

/// One run of a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunView {
    pub id: u64,
    /// The scheduled slot it ran for (ms since the epoch); none for a run asked for.
    pub slot_ms: Option<u64>,
    pub by: String,
    pub attempt: u32,
    /// pending, running, succeeded, failed, timed-out, cancelled, skipped.
    pub state: String,
    pub node: Option<String>,
    pub created_at_ms: u64,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    pub retry_at_ms: Option<u64>,
    /// How the last attempt ended.
    pub result: Option<String>,
    pub exit_code: Option<i32>,
}

/// One job in `GET /v1/jobs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobView {
    pub name: String,
    pub project: String,
    /// `cron 0 3 * * * (UTC)`, `every 6h`; none for a job run by hand only.
    pub schedule: Option<String>,
    pub next_at_ms: Option<u64>,
    /// The newest run.
    pub last: Option<RunView>,
    /// Runs pending or running.
    pub active: u32,
}

/// `GET /v1/jobs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobsResponse {
    pub jobs: Vec<JobView>,
}

/// `GET /v1/jobs/{name}`: the job and its runs, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobHistoryResponse {
    pub job: JobView,
    pub runs: Vec<RunView>,
}

/// `POST /v1/jobs/{name}/run` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunStarted {
    pub job: String,
    pub project: String,
    pub run: u64,
}

/// One route's counters on one node (`GET /cluster/route-stats`, `GET /v1/routes`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteCounters {
    /// `host` + `path`, e.g. `shop.example/api`.
    pub route: String,
    pub service: String,
    pub requests: u64,
    pub http_1xx: u64,
    pub http_2xx: u64,
    pub http_3xx: u64,
    pub http_4xx: u64,
    pub http_5xx: u64,
    pub retries: u64,
    pub timeouts: u64,
    /// Sum of the times to the response head, microseconds (mean = sum / requests).
    pub latency_us_sum: u64,
}

/// What one node's ingress counted (`GET /cluster/route-stats`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeRouteStats {
    pub node: String,
    pub routes: Vec<RouteCounters>,
    /// TLS handshakes that failed on this edge (no certificate for the name, not TLS...).
    #[serde(default)]
    pub tls_handshake_failures: u64,
    /// Access-log lines dropped because the writer was behind.
    #[serde(default)]
    pub access_log_dropped: u64,
}

/// An edge node as `holdfast routes` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EdgeView {
    pub node: String,
    pub public_address: String,
    pub http_port: u16,
    pub https_port: u16,
    pub dns_port: u16,
    /// Whether DNS answers with it now, as the answering node sees it.
    pub live: bool,
}

/// `GET /v1/routes`: every route with its TLS, and the counters of every node that
/// answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoutesResponse {
    pub routes: Vec<RouteView>,
    pub edges: Vec<EdgeView>,
    /// The node whose probes decided `edges[].live`.
    pub seen_by: String,
    /// DNS answers every edge because none looked live (see the README).
    pub failing_open: bool,
    pub nodes: Vec<NodeRouteStats>,
    /// Nodes whose counters could not be fetched, with why.
    pub unreachable: Vec<String>,
}

/// One deployed route.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouteView {
    pub host: String,
    pub path: String,
    pub service: String,
    pub port: String,
    /// `none`, `auto`, or `secrets <cert> <key>`.
    pub tls: String,
    pub https_redirect: bool,
    pub timeout_ms: u64,
}

/// `PUT /v1/acme`: where certificates of `tls: auto` routes are ordered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AcmeConfigRequest {
    /// The CA's ACME directory URL (https).
    pub directory: String,
    #[serde(default)]
    pub email: Option<String>,
    /// A PEM root to trust for the directory (a private or test CA).
    #[serde(default)]
    pub ca_pem: Option<String>,
}

/// One certificate the edges serve or should serve (`GET /v1/certs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertView {
    /// The route host (for `tls: auto`) or the hosts of the routes using the pair.
    pub hosts: Vec<String>,
    /// `acme` or `secrets <project>/<cert> <project>/<key>`.
    pub source: String,
    /// The names in the certificate, when there is one.
    pub names: Vec<String>,
    pub not_after_ms: Option<u64>,
    /// When it is renewed (ACME).
    pub renew_at_ms: Option<u64>,
    /// `valid`, `expired`, `no certificate yet`, or why it cannot be read.
    pub status: String,
    /// ACME: failed orders in a row, the last error and when the next attempt may run.
    pub failures: u32,
    pub last_error: Option<String>,
    pub next_attempt_ms: Option<u64>,
    pub renew_requested: bool,
}

/// `GET /v1/certs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertsResponse {
    pub acme_directory: String,
    pub acme_email: Option<String>,
    pub acme_custom_ca: bool,
    pub certs: Vec<CertView>,
}

/// One usage sample of an instance: CPU in millicores averaged since the previous sample,
/// memory in bytes at the sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageSample {
    pub at_ms: u64,
    pub cpu_millis: Option<u32>,
    pub memory_bytes: Option<u64>,
}

/// One instance's use of its node, against what its service asked for
/// (`GET /v1/usage`, `holdfast top`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceUsage {
    /// `web-0`.
    pub instance: String,
    pub service: String,
    pub project: String,
    pub node: String,
    /// The service's `resources`: what placement reserved, and the instance's cgroup
    /// limits (CPU quota, memory.max).
    pub cpu_request_millis: Option<u32>,
    pub memory_request_bytes: Option<u64>,
    /// Now: CPU over the last seconds, memory as read at the answer.
    pub cpu_millis: Option<u32>,
    pub memory_bytes: Option<u64>,
    /// Over the kept history (up to an hour).
    pub cpu_avg_millis: Option<u32>,
    pub cpu_peak_millis: Option<u32>,
    pub memory_peak_bytes: Option<u64>,
    /// Oldest first; empty when the request asked for none.
    #[serde(default)]
    pub samples: Vec<UsageSample>,
}

/// `GET /v1/usage?service=&node=&samples=` (every node's history, gathered) and
/// `GET /cluster/usage` (one node's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageResponse {
    /// How often nodes sample (ms).
    pub interval_ms: u64,
    /// How much history nodes keep (ms).
    pub window_ms: u64,
    pub instances: Vec<InstanceUsage>,
    /// Nodes that did not answer (their instances are missing).
    #[serde(default)]
    pub unreachable: Vec<String>,
}

/// One line of a service's or job run's log, as the API streams it (one JSON object per
/// line). `at_ms` is when the line was written: exact for holdfast's own marker lines,
/// otherwise when the node's agent first saw it in the file (within a second).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub at_ms: Option<u64>,
    pub node: String,
    pub instance: String,
    pub line: String,
}

/// What a log stream carries: lines, and notes about nodes that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LogItem {
    Line(LogLine),
    Note { node: String, note: String },
}
