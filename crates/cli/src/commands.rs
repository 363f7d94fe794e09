//! Client commands: each builds an API client, calls the node, and prints a table or JSON.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use holdfast_api::types::{DeployRequest, PlanResponse, StatusResponse};
use holdfast_api::Client;
use holdfast_state::plan::ChangeKind;
use http_body_util::BodyExt;

use crate::output;
use crate::Global;

#[derive(Args, Debug)]
pub struct DeployArgs {
    /// Spec files (YAML); several files are merged into one project.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// How long to wait for every replica to be ready, e.g. 90s, 5m.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Apply and return without waiting for readiness.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// Spec files (YAML).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Service name.
    pub service: String,
    /// Keep printing new lines as they are written.
    #[arg(short, long)]
    pub follow: bool,
    /// Lines of history per instance (default 100; with --since, every line since).
    #[arg(long)]
    pub tail: Option<usize>,
    /// Only lines written since then: a duration back from now (30s, 10m, 2h) or a UTC
    /// time (2026-12-01T10:42:00Z). Lines are dated within a second by the node's agent.
    #[arg(long, value_parser = parse_since)]
    pub since: Option<u64>,
    /// Only lines matching this regular expression (Rust regex syntax; `(?i)` for any case).
    #[arg(long)]
    pub grep: Option<String>,
    /// Print each line's time (UTC) first.
    #[arg(short = 't', long)]
    pub timestamps: bool,
}

/// `--since`: a duration back from now, or a UTC time, as unix ms.
pub fn parse_since(s: &str) -> Result<u64, String> {
    if let Some(ms) = holdfast_agent::logs::parse_utc_timestamp(s) {
        return Ok(ms);
    }
    match parse_duration(s) {
        Ok(d) => Ok(now_ms().saturating_sub(d.as_millis() as u64)),
        Err(_) => Err(format!("`{s}` is neither a duration (30s, 10m, 2h) nor a UTC time (2026-12-01T10:42:00Z)")),
    }
}

#[derive(Args, Debug)]
pub struct ServiceArgs {
    /// Service name.
    pub service: String,
}

#[derive(Args, Debug)]
pub struct ScaleArgs {
    /// Service name.
    pub service: String,
    /// New number of replicas (0 stops every instance but keeps the service).
    pub replicas: u64,
}

#[derive(Args, Debug)]
pub struct NodeArgs {
    /// Node name (or id).
    pub node: String,
}

#[derive(Args, Debug)]
pub struct LabelArgs {
    /// Node name (or id).
    pub node: String,
    /// KEY=VALUE to set a label, KEY- to remove one.
    #[arg(required = true, value_name = "KEY=VALUE|KEY-", value_parser = holdfast_state::labels::parse_label_arg)]
    pub labels: Vec<holdfast_state::labels::LabelChange>,
}

#[derive(Args, Debug)]
pub struct DrainArgs {
    /// Node name (or id).
    pub node: String,
    /// Start the drain and return without waiting for the node to be empty.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the node to be empty (the drain goes on afterwards).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Show the cluster's settings.
    Settings,
    /// Change failure-detection timing for every node of the cluster, e.g.
    /// `holdfast cluster set --down-after 10s` for machines on a flaky Wi-Fi.
    /// Settings are checked together (suspect-after at least two heartbeats, down-after
    /// longer than suspect-after, ...); a bad combination changes nothing.
    Set {
        /// How often every node heartbeats to the leader (default 300ms).
        #[arg(long, value_parser = parse_duration)]
        heartbeat: Option<Duration>,
        /// Silence after which a node is shown as suspect (default 1.2s).
        #[arg(long, value_parser = parse_duration)]
        suspect_after: Option<Duration>,
        /// Silence after which a node is declared down and its replicas placed elsewhere
        /// (default 3s).
        #[arg(long, value_parser = parse_duration)]
        down_after: Option<Duration>,
        /// How long a Raft voter may be down before another node replaces it (default 30s).
        #[arg(long, value_parser = parse_duration)]
        voter_replace_after: Option<Duration>,
        /// How long a new member must be alive and caught up with the log before it may
        /// vote (default 5s); until then it is a learner and costs no quorum.
        #[arg(long, value_parser = parse_duration)]
        promote_after: Option<Duration>,
    },
    /// Disaster recovery when a majority of the voters is gone for good: makes THIS
    /// node the only voter, from the state it has, so the cluster can change again.
    ///
    /// Run it on a surviving node with that node stopped (Ctrl-C its `holdfast up`),
    /// then start the node again. Changes that only the lost voters had are lost. The
    /// other nodes stay members (down ones are re-placed as usual); remove the dead ones
    /// with `holdfast node rm`, and join new machines as usual. Never run it on two
    /// nodes of one cluster: each would lead its own copy.
    ///
    /// Example (5 nodes, 4 destroyed):
    ///   holdfast --data-dir /var/lib/holdfast cluster recover      # asks to confirm
    ///   holdfast up --data-dir /var/lib/holdfast ...              # leads alone
    #[command(verbatim_doc_comment)]
    Recover {
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Create a one-time join token for a new machine.
    Create {
        /// How long the token is valid, e.g. 10m, 1h.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: Duration,
    },
}

#[derive(Subcommand, Debug)]
pub enum CertCmd {
    /// Every certificate the routes need: from secrets or ordered with ACME, its names,
    /// expiry, when it renews, and the last failed order's error.
    Ls,
    /// Order a new ACME certificate for HOST now (a `tls: auto` route's host), even
    /// though the current one is still valid. The CA limits duplicates (Let's Encrypt: 5
    /// a week), so use it when a certificate must change, not on a schedule.
    Renew {
        /// The route host, e.g. shop.example.com.
        host: String,
    },
    /// Where `tls: auto` certificates are ordered (default: Let's Encrypt production).
    ///
    /// Example: `holdfast cert acme --directory https://acme-staging-v02.api.letsencrypt.org/directory --email ops@example.com`.
    Acme {
        /// The CA's ACME directory URL (https).
        #[arg(long)]
        directory: String,
        /// Contact address for the account (the CA's expiry notices).
        #[arg(long)]
        email: Option<String>,
        /// A PEM root to trust for the directory's HTTPS (a private CA, or a test CA
        /// such as pebble).
        #[arg(long, value_name = "FILE")]
        ca_file: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
pub struct NodeRmArgs {
    /// Node name (or id).
    pub node: String,
    /// Start the removal and return at once (the leader finishes it).
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the removal to finish (it goes on afterwards).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Subcommand, Debug)]
pub enum NodeCmd {
    /// Remove a node: its replicas move away (each new instance ready before the old one
    /// stops; at once if the node is down), then the leader removes it and revokes its
    /// certificate. Waits with progress; `holdfast uncordon NODE` cancels.
    Rm(NodeRmArgs),
    /// Set or remove labels of a node; services choose nodes by label with
    /// `placement.node_selector`.
    ///
    /// Replicas whose node selector no longer matches move to a node that does (the others
    /// stay). A change that would leave a replica with no node to run on is refused and
    /// changes nothing. Every node also has the built-in labels name, site and arch, which
    /// cannot be changed here.
    ///
    /// Examples:
    ///   holdfast node label n1 gpu=true disk=ssd    # set two labels
    ///   holdfast node label n1 gpu-                 # remove `gpu`
    ///   holdfast nodes                              # LABELS column; --json for all labels
    #[command(verbatim_doc_comment)]
    Label(LabelArgs),
    /// Re-execute the node's binary in place (after replacing it with a new version).
    /// Running workloads are re-adopted, not restarted. Same as `kill -USR2 <pid>`.
    Reexec,
}

/// Parses `500ms`, `30s`, `5m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    holdfast_spec::parse_duration_ms(s).map(Duration::from_millis).map_err(|e| format!("invalid duration `{s}`: {e}"))
}

/// Builds the API client from `--server/--token/--ca` or the data directory.
pub fn client(g: &Global) -> Result<Client> {
    if let Some(server) = &g.server {
        let token = g.token.clone().ok_or_else(|| {
            anyhow!("--server needs --token (or HOLDFAST_TOKEN): the content of admin.token on that node")
        })?;
        let ca_path = g.ca.clone().ok_or_else(|| {
            anyhow!("--server needs --ca (or HOLDFAST_CA): the cluster's ca.pem, from any node's data directory")
        })?;
        let ca =
            std::fs::read_to_string(&ca_path).with_context(|| format!("cannot read --ca {}", ca_path.display()))?;
        let servers: Vec<String> = server
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                if s.starts_with("https://") {
                    s.to_string()
                } else {
                    format!("https://{}", s.trim_start_matches("http://"))
                }
            })
            .collect();
        return Ok(Client::with_servers(&servers, token, &ca)?.with_commit_timeout(g.commit_timeout));
    }
    let dir = g.data_dir.clone().unwrap_or_else(crate::default_data_dir);
    let addr_file = dir.join("api.addr");
    let addr = std::fs::read_to_string(&addr_file)
        .with_context(|| {
            format!(
                "no running node found: cannot read {} (start one with `holdfast up --data-dir {}`, or pass --server and --token)",
                addr_file.display(),
                dir.display()
            )
        })?
        .trim()
        .to_string();
    let token_file = dir.join("admin.token");
    let token = match &g.token {
        Some(t) => t.clone(),
        None => std::fs::read_to_string(&token_file)
            .with_context(|| format!("cannot read the admin token {}", token_file.display()))?
            .trim()
            .to_string(),
    };
    let ca_file = dir.join("ca.pem");
    let ca = std::fs::read_to_string(&ca_file)
        .with_context(|| format!("cannot read the cluster CA {}", ca_file.display()))?;
    Ok(Client::new(format!("https://{addr}"), token, &ca)?.with_commit_timeout(g.commit_timeout))
}

fn load_stack(files: &[PathBuf]) -> Result<holdfast_spec::Stack> {
    holdfast_spec::load_files(files).map_err(|e| anyhow!("the spec is invalid; nothing was changed:\n{e}"))
}

pub async fn deploy(g: &Global, args: DeployArgs) -> Result<ExitCode> {
    let stack = load_stack(&args.files)?;
    let c = client(g)?;
    deploy_stack(g, &c, stack, args.timeout, args.no_wait).await
}

/// Deploys, prints the plan, and waits for readiness. Shared with `up SPEC`.
pub async fn deploy_stack(
    g: &Global,
    c: &Client,
    stack: holdfast_spec::Stack,
    timeout: Duration,
    no_wait: bool,
) -> Result<ExitCode> {
    let project = stack.project.clone();
    let resp = c.deploy(&DeployRequest { stack, dry_run: false }).await?;
    if g.json && no_wait {
        println!("{}", serde_json::to_string_pretty(&resp)?);
        return Ok(ExitCode::SUCCESS);
    }
    if !g.json {
        print!("{}", output::plan(&project, &resp.plan));
        if resp.applied {
            println!("Applied at revision {}.", resp.revision);
        } else {
            println!("Nothing to change (revision {}).", resp.revision);
        }
    }
    if no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    let services: Vec<String> = resp
        .plan
        .changes
        .iter()
        .filter(|c| matches!(c.kind, ChangeKind::Create | ChangeKind::Update | ChangeKind::Unchanged))
        .filter_map(|c| c.target.strip_prefix("service ").map(str::to_string))
        .collect();
    let ok = wait_ready(g, c, &services, timeout).await?;
    if g.json {
        println!("{}", serde_json::to_string_pretty(&resp)?);
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Polls status until every listed service has all replicas ready on its current
/// generation; prints progress, and on timeout explains every instance that is not ready.
pub async fn wait_ready(g: &Global, c: &Client, services: &[String], timeout: Duration) -> Result<bool> {
    let start = Instant::now();
    let mut last_line = String::new();
    loop {
        let st = c.status().await?;
        let watched: Vec<_> = st.services.iter().filter(|s| services.contains(&s.name)).collect();
        let ready = watched.iter().filter(|s| s.ready >= s.replicas && all_current(s)).count();
        let line =
            watched.iter().map(|s| format!("{} {}/{}", s.name, s.ready, s.replicas)).collect::<Vec<_>>().join(", ");
        if !g.json && line != last_line && !line.is_empty() {
            eprintln!("  [{:>5.1}s] ready: {line}", start.elapsed().as_secs_f64());
            last_line = line;
        }
        if ready == watched.len() {
            if !g.json {
                println!("All {} service(s) ready in {:.1}s.", watched.len(), start.elapsed().as_secs_f64());
            }
            return Ok(true);
        }
        if start.elapsed() >= timeout {
            eprintln!("Timed out after {}s waiting for readiness:", timeout.as_secs());
            explain_not_ready(c, &st, services).await;
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn all_current(s: &holdfast_api::types::ServiceView) -> bool {
    // An instance's generation is at least its service's; a moved replica's is higher.
    s.instances.iter().all(|i| i.generation >= s.generation && i.state != "outdated")
}

async fn explain_not_ready(c: &Client, st: &StatusResponse, services: &[String]) {
    for s in st.services.iter().filter(|s| services.contains(&s.name)) {
        for i in s.instances.iter().filter(|i| !i.ready || i.generation < s.generation || i.state == "outdated") {
            eprintln!("  {} is {} (restarts: {})", i.name, i.state, i.restarts);
            if let Some(e) = &i.last_exit {
                eprintln!("    last exit: {}", e.description);
            }
            if let Some(h) = &i.last_health_error {
                eprintln!("    health check: {h}");
            }
        }
        if let Ok(text) = collect_logs(c, &s.name, 5).await {
            if !text.trim().is_empty() {
                eprintln!("    last log lines of {}:", s.name);
                for l in text.lines() {
                    eprintln!("      {l}");
                }
            }
        }
    }
}

/// The last `tail` lines per instance of a service, as `node instance | line`.
async fn collect_logs(c: &Client, service: &str, tail: usize) -> Result<String> {
    let q = holdfast_api::client::LogsQuery { tail: Some(tail), ..Default::default() };
    let resp = c.logs(service, &q).await?;
    let bytes = resp.into_body().collect().await?.to_bytes();
    let mut out = String::new();
    for raw in String::from_utf8_lossy(&bytes).lines() {
        match serde_json::from_str::<holdfast_api::types::LogItem>(raw) {
            Ok(holdfast_api::types::LogItem::Line(l)) => {
                out.push_str(&format!("{} {} | {}\n", l.node, l.instance, l.line))
            }
            Ok(holdfast_api::types::LogItem::Note { note, .. }) => out.push_str(&format!("(holdfast: {note})\n")),
            Err(_) => {}
        }
    }
    Ok(out)
}

pub async fn diff(g: &Global, args: DiffArgs) -> Result<ExitCode> {
    let stack = load_stack(&args.files)?;
    let project = stack.project.clone();
    let resp = client(g)?.deploy(&DeployRequest { stack, dry_run: true }).await?;
    if g.json {
        println!("{}", serde_json::to_string_pretty(&resp)?);
    } else {
        print!("{}", output::plan(&project, &resp.plan));
        if resp.plan.is_noop() {
            println!("No changes.");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn status(g: &Global) -> Result<ExitCode> {
    let c = client(g)?;
    let st = c.status().await?;
    if g.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", output::status(&st, now_ms()));
    // The last hour's events per service, from every node's journal; status is shown
    // without them when they do not come within 3 s.
    if !st.services.is_empty() {
        let since = now_ms().saturating_sub(3_600_000);
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(3), c.events(since, 2000)).await {
            print!("{}", output::service_events(&st, &r.events, 3));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn logs(g: &Global, args: LogsArgs) -> Result<ExitCode> {
    use std::io::Write;
    if let Some(re) = &args.grep {
        regex::Regex::new(re).map_err(|e| anyhow!("--grep: `{re}` is not a regular expression: {e}"))?;
    }
    let q = holdfast_api::client::LogsQuery {
        tail: args.tail,
        since_ms: args.since,
        grep: args.grep.clone(),
        follow: args.follow,
    };
    let resp = client(g)?.logs(&args.service, &q).await?;
    let mut body = resp.into_body();
    let mut out = std::io::stdout();
    let mut pending = String::new();
    let mut width = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.context("log stream interrupted")?;
        let Some(data) = frame.data_ref() else { continue };
        pending.push_str(&String::from_utf8_lossy(data));
        let mut text = String::new();
        while let Some(pos) = pending.find('\n') {
            let raw: String = pending.drain(..=pos).collect();
            let Ok(item) = serde_json::from_str::<holdfast_api::types::LogItem>(raw.trim_end()) else { continue };
            if g.json {
                text.push_str(&raw);
                continue;
            }
            match item {
                holdfast_api::types::LogItem::Line(l) => {
                    let who = format!("{} {}", l.node, l.instance);
                    width = width.max(who.len());
                    if args.timestamps {
                        let at = l.at_ms.map(holdfast_agent::utc_timestamp).unwrap_or_else(|| "-".repeat(24));
                        text.push_str(&format!("{at} "));
                    }
                    text.push_str(&format!("{who:<width$} | {}\n", l.line));
                }
                holdfast_api::types::LogItem::Note { note, .. } => eprintln!("(holdfast: {note})"),
            }
        }
        if out.write_all(text.as_bytes()).and_then(|_| out.flush()).is_err() {
            break; // stdout closed (e.g. piped into head)
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_change(g: &Global, resp: &PlanResponse) -> Result<()> {
    if g.json {
        println!("{}", serde_json::to_string_pretty(resp)?);
    } else {
        for c in &resp.plan.changes {
            println!("{}", output::change_line(c));
        }
        if resp.applied {
            println!("Applied at revision {}.", resp.revision);
        } else {
            println!("Nothing to change.");
        }
    }
    Ok(())
}

pub async fn restart(g: &Global, args: ServiceArgs) -> Result<ExitCode> {
    let c = client(g)?;
    let resp = c.restart(&args.service).await?;
    print_change(g, &resp)?;
    let ok = wait_ready(g, &c, std::slice::from_ref(&args.service), Duration::from_secs(120)).await?;
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub async fn scale(g: &Global, args: ScaleArgs) -> Result<ExitCode> {
    let c = client(g)?;
    let resp = c.scale(&args.service, args.replicas).await?;
    print_change(g, &resp)?;
    let ok = wait_ready(g, &c, std::slice::from_ref(&args.service), Duration::from_secs(120)).await?;
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub async fn remove(g: &Global, args: ServiceArgs) -> Result<ExitCode> {
    let resp = client(g)?.remove(&args.service).await?;
    print_change(g, &resp)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn node(g: &Global, cmd: NodeCmd) -> Result<ExitCode> {
    match cmd {
        NodeCmd::Rm(args) => node_rm(g, args).await,
        NodeCmd::Label(args) => {
            let (set, remove) = holdfast_state::labels::split_changes(&args.labels).map_err(|e| anyhow!(e))?;
            let req = holdfast_api::types::NodeLabelsRequest { set, remove: remove.into_iter().collect() };
            let r = client(g)?.label_node(&args.node, &req).await?;
            print_json_or(g, &r, &output::node_labels(&r))
        }
        NodeCmd::Reexec => {
            let c = client(g)?;
            let before = c.status().await?.node.pid;
            c.reexec().await?;
            // Wait for the new image to answer.
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(30) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Ok(st) = c.status().await {
                    if !g.json {
                        println!("node re-executed (pid {} kept: {})", st.node.pid, st.node.pid == before);
                    }
                    return Ok(ExitCode::SUCCESS);
                }
            }
            bail!("the node did not come back within 30s after re-exec; check its log")
        }
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn print_json_or<T: serde::Serialize>(g: &Global, value: &T, text: &str) -> Result<ExitCode> {
    if g.json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        println!("{text}");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn nodes(g: &Global) -> Result<ExitCode> {
    let r = client(g)?.nodes().await?;
    if g.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", output::nodes(&r));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn cordon(g: &Global, args: NodeArgs) -> Result<ExitCode> {
    let r = client(g)?.cordon(&args.node).await?;
    print_json_or(g, &r, &r.message)
}

pub async fn drain(g: &Global, args: DrainArgs) -> Result<ExitCode> {
    let c = client(g)?;
    let r = c.drain(&args.node).await?;
    let name = args.node.clone();
    follow(g, &r, args.no_wait, args.timeout, async |elapsed| {
        let nodes = c.nodes().await?;
        let node = find_node(&nodes, &name).ok_or_else(|| anyhow!("node `{name}` is no longer a member"))?;
        let status = c.status().await?;
        let moving: Vec<&String> =
            status.warnings.iter().filter(|w| w.contains("(drain)") || w.contains("cannot leave")).collect();
        if node.instances == 0 && moving.is_empty() {
            return Ok(Follow::Done(format!("node {} is drained ({:.1}s)", node.name, elapsed.as_secs_f64())));
        }
        let line = format!(
            "  {} replica(s) left on {}{}",
            node.instances,
            node.name,
            moving.iter().map(|m| format!("\n    {m}")).collect::<String>()
        );
        let late = format!(
            "node {} still holds {} replica(s) after {}s; the drain goes on in the background (see `holdfast status`)",
            node.name,
            node.instances,
            args.timeout.as_secs()
        );
        Ok(Follow::Progress(line, late))
    })
    .await
}

/// One poll of an operation [`follow`] waits for.
enum Follow {
    /// Finished: the line to print.
    Done(String),
    /// Still going: a progress line (printed when it changes), and what to say if the
    /// wait times out now.
    Progress(String, String),
}

/// Prints `r`'s message, then polls until the operation is done, printing progress lines
/// as they change; on `timeout` fails with the last poll's message (the operation goes on
/// in the background). `--no-wait` and `--json` print only the answer.
async fn follow(
    g: &Global,
    r: &holdfast_api::types::NodeActionResponse,
    no_wait: bool,
    timeout: Duration,
    mut poll: impl AsyncFnMut(Duration) -> Result<Follow>,
) -> Result<ExitCode> {
    if no_wait {
        return print_json_or(g, r, &r.message);
    }
    if !g.json {
        eprintln!("{}", r.message);
    }
    let start = Instant::now();
    let mut last_line = String::new();
    loop {
        match poll(start.elapsed()).await? {
            Follow::Done(line) => {
                if g.json {
                    println!("{}", serde_json::to_string_pretty(r)?);
                } else {
                    println!("{line}");
                }
                return Ok(ExitCode::SUCCESS);
            }
            Follow::Progress(line, late) => {
                if !g.json && line != last_line {
                    eprintln!("{line}");
                    last_line = line;
                }
                if start.elapsed() >= timeout {
                    bail!("{late}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn find_node<'a>(
    nodes: &'a holdfast_api::types::NodesResponse,
    name: &str,
) -> Option<&'a holdfast_api::types::NodeView> {
    nodes.nodes.iter().find(|n| n.name == name || n.id.to_string() == name)
}

pub async fn cluster(g: &Global, cmd: ClusterCmd) -> Result<ExitCode> {
    let (settings, changed) = match cmd {
        // Offline: there is no node to talk to.
        ClusterCmd::Recover { yes } => return crate::recover::run(g, yes),
        ClusterCmd::Settings => (client(g)?.settings().await?, false),
        ClusterCmd::Set { heartbeat, suspect_after, down_after, voter_replace_after, promote_after } => {
            let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
            let change = holdfast_api::types::SettingsChange {
                heartbeat_ms: ms(heartbeat),
                suspect_after_ms: ms(suspect_after),
                down_after_ms: ms(down_after),
                voter_replace_after_ms: ms(voter_replace_after),
                promote_after_ms: ms(promote_after),
            };
            if change == Default::default() {
                bail!("nothing to change: give at least one of --heartbeat, --suspect-after, --down-after, --voter-replace-after, --promote-after");
            }
            (client(g)?.change_settings(&change).await?, true)
        }
    };
    if g.json {
        println!("{}", serde_json::to_string_pretty(&settings)?);
    } else {
        if changed {
            println!("settings changed; every node follows within a heartbeat");
        }
        print!("{}", output::settings(&settings));
    }
    Ok(ExitCode::SUCCESS)
}

/// `holdfast node rm`: starts the removal, then follows it until the node is gone.
async fn node_rm(g: &Global, args: NodeRmArgs) -> Result<ExitCode> {
    let c = client(g)?;
    let r = c.remove_node(&args.node).await?;
    let name = args.node.clone();
    follow(g, &r, args.no_wait, args.timeout, async |elapsed| {
        let nodes = c.nodes().await?;
        let Some(node) = find_node(&nodes, &name) else {
            return Ok(Follow::Done(format!(
                "node {name} removed ({:.1}s); its certificate is no longer accepted",
                elapsed.as_secs_f64()
            )));
        };
        if !node.removing {
            bail!("the removal of node {} was cancelled (uncordoned); it stays a member", node.name);
        }
        let late = format!(
            "node {} still holds {} replica(s) after {}s; the removal goes on in the background (see `holdfast nodes`; `holdfast uncordon {}` cancels it)",
            node.name,
            node.instances,
            args.timeout.as_secs(),
            node.name
        );
        Ok(Follow::Progress(format!("  {} replica(s) left on {}", node.instances, node.name), late))
    })
    .await
}

/// `holdfast workers`: the background loops of the node this CLI talks to.
#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Only events of the last DURATION (e.g. 30m, 1h, 48h).
    #[arg(long, value_parser = parse_duration)]
    pub since: Option<Duration>,
    /// Keep printing new events as they happen.
    #[arg(short, long)]
    pub follow: bool,
    /// At most this many events (the newest).
    #[arg(long, default_value_t = 200)]
    pub limit: usize,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The docker-compose file (env_file paths are relative to it).
    pub file: PathBuf,
    /// The project of the spec (default: the compose file's `name:`, else its directory's name).
    #[arg(long)]
    pub project: Option<String>,
}

/// `holdfast import`: the spec on stdout, what was not carried over on stderr.
pub fn import(args: ImportArgs) -> Result<ExitCode> {
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let dir = args.file.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    let default_project = {
        let base =
            std::fs::canonicalize(&dir).ok().and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()));
        let cleaned: String = base
            .unwrap_or_else(|| "default".into())
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let cleaned = cleaned.trim_matches('-').to_string();
        if cleaned.is_empty() {
            "default".to_string()
        } else {
            cleaned
        }
    };
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).map_err(|e| e.to_string());
    let shown = args.file.display().to_string();
    let out = holdfast_spec::compose::import_compose(&shown, &text, args.project.as_deref(), &default_project, &read)
        .map_err(|e| anyhow!(e))?;
    print!("{}", out.spec);
    for n in &out.notes {
        eprintln!("{n}");
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct TopArgs {
    /// Only this service's instances (a database's members: `database db`, or just `db`).
    #[arg(long)]
    pub service: Option<String>,
    /// Only the instances on this node.
    #[arg(long)]
    pub node: Option<String>,
    /// Order rows by CPU now (default), memory now, or name.
    #[arg(long, value_enum, default_value = "cpu")]
    pub sort: crate::output::TopSort,
    /// Print once and exit (the default when the output is not a terminal, or with --json).
    #[arg(long)]
    pub once: bool,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 2)]
    pub interval: u64,
}

pub async fn top(g: &Global, args: TopArgs) -> Result<ExitCode> {
    use std::io::IsTerminal;
    let c = client(g)?;
    let live = !args.once && !g.json && std::io::stdout().is_terminal();
    let service = args.service.as_deref().map(|s| s.strip_prefix("database ").unwrap_or(s));
    let db_name = service.filter(|s| !s.starts_with("job ")).map(|s| format!("database {s}"));
    loop {
        let mut r = c.usage(None, args.node.as_deref(), 0).await?;
        if let Some(s) = service {
            r.instances.retain(|i| i.service == s || Some(&i.service) == db_name.as_ref());
        }
        if g.json {
            println!("{}", serde_json::to_string_pretty(&r)?);
            return Ok(ExitCode::SUCCESS);
        }
        let text = output::top(&r, args.sort);
        if !live {
            print!("{text}");
            return Ok(ExitCode::SUCCESS);
        }
        // Clear the screen and home the cursor, then draw (a terminal only).
        print!("\x1b[2J\x1b[H{} · every {}s · Ctrl-C to stop\n\n{text}", output::utc(now_ms()), args.interval);
        use std::io::Write;
        let _ = std::io::stdout().flush();
        tokio::time::sleep(Duration::from_secs(args.interval.max(1))).await;
    }
}

pub async fn events(g: &Global, args: EventsArgs) -> Result<ExitCode> {
    let c = client(g)?;
    let since = args.since.map_or(0, |d| now_ms().saturating_sub(d.as_millis() as u64));
    let r = c.events(since, args.limit).await?;
    if g.json && !args.follow {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    let print = |events: &[holdfast_api::types::EventView]| {
        if g.json {
            for e in events {
                if let Ok(line) = serde_json::to_string(e) {
                    println!("{line}");
                }
            }
        } else {
            print!("{}", output::events(events));
        }
    };
    if !g.json && r.events.is_empty() && !args.follow {
        println!("no events{}", if args.since.is_some() { " in that time" } else { "" });
    }
    print(&r.events);
    if !r.unreachable.is_empty() {
        eprintln!("(not read: the journals of {}; events only they recorded are missing)", r.unreachable.join(", "));
    }
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    // Follow: ask again every second for what is newer than the newest seen (events of
    // the same millisecond are told apart by key).
    let mut seen: std::collections::HashSet<String> = r.events.iter().map(|e| e.key.clone()).collect();
    let mut from = r.events.last().map_or(now_ms(), |e| e.at_ms);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Ok(r) = c.events(from, 5000).await else { continue };
        let fresh: Vec<holdfast_api::types::EventView> =
            r.events.into_iter().filter(|e| seen.insert(e.key.clone())).collect();
        if let Some(last) = fresh.last() {
            from = from.max(last.at_ms);
        }
        print(&fresh);
    }
}

pub async fn cert(g: &Global, cmd: CertCmd) -> Result<ExitCode> {
    let r = match cmd {
        CertCmd::Ls => client(g)?.certs().await?,
        CertCmd::Renew { host } => client(g)?.renew_cert(&host).await?,
        CertCmd::Acme { directory, email, ca_file } => {
            let ca_pem = match ca_file {
                Some(f) => Some(
                    std::fs::read_to_string(&f).with_context(|| format!("cannot read --ca-file {}", f.display()))?,
                ),
                None => None,
            };
            let req = holdfast_api::types::AcmeConfigRequest { directory, email, ca_pem };
            client(g)?.set_acme(&req).await?
        }
    };
    print_json_or(g, &r, &output::certs(&r, now_ms()))
}

pub async fn routes(g: &Global) -> Result<ExitCode> {
    let r = client(g)?.routes().await?;
    print_json_or(g, &r, &output::routes(&r))
}

pub async fn workers(g: &Global) -> Result<ExitCode> {
    let r = client(g)?.workers().await?;
    print_json_or(g, &r, &output::workers(&r))
}

pub async fn uncordon(g: &Global, args: NodeArgs) -> Result<ExitCode> {
    let r = client(g)?.uncordon(&args.node).await?;
    print_json_or(g, &r, &r.message)
}

pub async fn token(g: &Global, cmd: TokenCmd) -> Result<ExitCode> {
    match cmd {
        TokenCmd::Create { ttl } => {
            let r = client(g)?.create_token(ttl.as_millis() as u64).await?;
            if g.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!("{}", r.token);
                eprintln!(
                    "one-time join token, valid for {}s, joins through {}. On the new machine:\n  holdfast join <token> --listen <its-ip>:7946 --site <site>",
                    ttl.as_secs(),
                    r.join_addr
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
