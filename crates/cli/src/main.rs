//! The `holdfast` binary: command-line parsing and the edge where errors become reports.
//!
//! - `up` runs a node in the foreground (`holdfast_node`), optionally deploying specs.
//! - every other command is an API client (`holdfast_api::Client`) of a running node,
//!   found through `--data-dir` (its `api.addr` and `admin.token`) or `--server/--token`.
//!
//! Exit codes: 0 ok, 1 failure, 2 usage error.
#![forbid(unsafe_code)]

mod commands;
mod db;
mod jobs;
mod output;
mod recover;
mod secrets;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// holdfast keeps a small team's services (web apps, databases, jobs) up on a handful of
/// cheap machines. Every machine runs `holdfast up`; the services are described in YAML
/// spec files and changed with `holdfast deploy`.
///
/// Quick start:
///   holdfast up --demo                # one-machine cluster with the demo stack
///   holdfast status                   # services, replicas, health, restarts, ports
///   holdfast logs web -f              # follow the logs of every web instance
///   holdfast diff holdfast.yaml       # what a deploy would change
///   holdfast deploy holdfast.yaml     # change the stack; only what changed is touched
///
/// More machines:
///   holdfast up --listen 10.0.0.1:7946 --site seoul      # machine 1
///   holdfast token create --ttl 1h                        # prints a join token
///   holdfast join TOKEN --listen 10.0.0.2:7946 --site idc --label gpu=true  # machines 2..5
///   holdfast nodes                                        # members, roles, health, labels
///   holdfast node label n2 disk=ssd                       # services select nodes by label
///
/// Secrets and access:
///   holdfast secret set shop/oauth-key < key.txt          # sealed; consumers roll onto it
///   holdfast acl token create --scope project:shop --name ci
#[derive(Parser, Debug)]
#[command(name = "holdfast", version, about, long_about, verbatim_doc_comment)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Data directory of the node (default: $XDG_DATA_HOME/holdfast, or ~/.local/share/holdfast).
    /// Client commands read the node's address and admin token from it.
    #[arg(long, global = true, env = "HOLDFAST_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Talk to the node at this address instead (e.g. 10.0.0.1:7946); several, comma
    /// separated (10.0.0.1:7946,10.0.0.2:7946), are tried in turn until one answers.
    /// Needs --token and --ca.
    #[arg(long, global = true, env = "HOLDFAST_SERVER")]
    pub server: Option<String>,
    /// API token: the admin token (admin.token in a node's data directory, read from
    /// --data-dir when this is not given) or a scoped one from `holdfast acl token create`.
    #[arg(long, global = true, env = "HOLDFAST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The cluster CA certificate for --server (ca.pem from any node's data directory).
    #[arg(long, global = true, env = "HOLDFAST_CA")]
    pub ca: Option<PathBuf>,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// How long a change may wait for the control plane's voters before it fails,
    /// naming the voters that do not answer (nothing is changed then), e.g. 30s.
    #[arg(long, global = true, default_value = "10s", value_parser = commands::parse_duration, env = "HOLDFAST_COMMIT_TIMEOUT")]
    pub commit_timeout: std::time::Duration,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a node in the foreground; a new data directory makes a new one-node cluster.
    ///
    /// Stops cleanly on Ctrl-C / SIGTERM (workloads are stopped, nothing is left behind).
    /// SIGUSR2 (or `holdfast node reexec`) re-executes the binary in place — e.g. after
    /// replacing it with a newer version — and running workloads are NOT restarted.
    Up(up::UpArgs),
    /// Join an existing cluster with a token from `holdfast token create`, then run the
    /// node in the foreground (like `up`). The token is only needed the first time.
    Join(up::JoinArgs),
    /// Apply spec files: show the plan, apply it atomically, wait until every replica is ready.
    Deploy(commands::DeployArgs),
    /// Show what `deploy` would change, without changing anything.
    Diff(commands::DiffArgs),
    /// Show services, replicas, health, restarts and ports.
    Status,
    /// Print (and with -f, follow) the logs of every instance of a service.
    Logs(commands::LogsArgs),
    /// Restart every instance of a service, one at a time.
    Restart(commands::ServiceArgs),
    /// Change the number of replicas of a service.
    Scale(commands::ScaleArgs),
    /// Remove a service (and the routes to it).
    Rm(commands::ServiceArgs),
    /// Cluster members: name, address, site, arch, role, state, load and labels.
    ///
    /// LABELS shows the labels set with `--label` or `holdfast node label`; `--json` lists
    /// every label selectors match, the built-ins name, site and arch included.
    Nodes,
    /// Place nothing new on a node; the replicas already there stay.
    Cordon(commands::NodeArgs),
    /// Move every replica off a node (for maintenance) and place nothing new there.
    ///
    /// Replicas move one at a time per service, and each new instance is started and
    /// ready before the old one stops, so traffic never lacks a replica. Waits until the
    /// node is empty, showing progress (`--no-wait` returns at once).
    Drain(commands::DrainArgs),
    /// Let a cordoned or drained node take replicas again (a drain in progress stops).
    Uncordon(commands::NodeArgs),
    /// Cluster-wide settings (failure detection, learner promotion) and disaster recovery.
    #[command(subcommand)]
    Cluster(commands::ClusterCmd),
    /// What each background loop of a node is doing: leader duties, heartbeats, links,
    /// reconcilers — last run, last progress, errors in a row, last error.
    Workers,
    /// What happened in the cluster: nodes down and back, drains, deploys, replicas
    /// moved, database failovers and switchovers, leader changes — from every node's
    /// journal, so the history survives any one node.
    ///
    /// Examples: `holdfast events --since 1h`, `holdfast events -f`, `holdfast events --json`.
    Events(commands::EventsArgs),
    /// Turn a docker-compose file into a holdfast spec (printed), naming every field it
    /// could not carry over, with its line (on stderr).
    ///
    /// Example: `holdfast import docker-compose.yml > holdfast.yaml`.
    Import(commands::ImportArgs),
    /// CPU and memory of every instance, per service and per node, against what each
    /// service asked for: now, and the average and peak over the last hour (every node
    /// samples its instances every 10 s and keeps an hour). Use it to size `resources`.
    ///
    /// Refreshes every 2 s in a terminal; prints once when piped, with --once or --json.
    /// Examples: `holdfast top`, `holdfast top --sort memory`, `holdfast top --service web`.
    Top(commands::TopArgs),
    /// The routes with their TLS, redirect and timeout; the edge nodes and whether DNS
    /// answers with them now; and every node's counters per route (requests by status
    /// class, retries, timeouts, mean time to the response head).
    ///
    /// Examples: `holdfast routes`, `holdfast routes --json`.
    Routes,
    /// Certificates of the edge: list them, renew an ACME one now, set where ACME
    /// certificates are ordered.
    ///
    /// Examples: `holdfast cert ls`, `holdfast cert renew shop.example.com`,
    /// `holdfast cert acme --directory URL --email ops@example.com`.
    #[command(subcommand)]
    Cert(commands::CertCmd),
    /// Join tokens.
    #[command(subcommand)]
    Token(commands::TokenCmd),
    /// Node maintenance: labels, removal, in-place upgrade.
    #[command(subcommand)]
    Node(commands::NodeCmd),
    /// Managed databases (PostgreSQL, Redis): status, connection URLs, psql, switchover.
    #[command(subcommand)]
    Db(db::DbCmd),
    /// Run a job now: its log is streamed, and the run's exit code is this command's.
    ///
    /// Examples: `holdfast run migrate`, `holdfast run shop/migrate --no-wait`.
    Run(jobs::RunArgs),
    /// Jobs: schedules, next and last runs, results; `holdfast jobs JOB` lists its runs.
    Jobs(jobs::JobsArgs),
    /// Secrets: set (from stdin or a file), list, history, remove. Values are sealed in
    /// the cluster and never shown; services read them as env values or files.
    #[command(subcommand)]
    Secret(secrets::SecretCmd),
    /// Scoped API tokens (read, project:<name>, secrets:<project>/<name>, admin).
    #[command(subcommand)]
    Acl(secrets::AclCmd),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Cmd::Up(args) => up::run(&cli.global, args, None).await,
            Cmd::Join(args) => up::run(&cli.global, args.up, Some(args.token)).await,
            Cmd::Nodes => commands::nodes(&cli.global).await,
            Cmd::Cordon(args) => commands::cordon(&cli.global, args).await,
            Cmd::Drain(args) => commands::drain(&cli.global, args).await,
            Cmd::Cluster(cmd) => commands::cluster(&cli.global, cmd).await,
            Cmd::Uncordon(args) => commands::uncordon(&cli.global, args).await,
            Cmd::Token(cmd) => commands::token(&cli.global, cmd).await,
            Cmd::Deploy(args) => commands::deploy(&cli.global, args).await,
            Cmd::Diff(args) => commands::diff(&cli.global, args).await,
            Cmd::Status => commands::status(&cli.global).await,
            Cmd::Logs(args) => commands::logs(&cli.global, args).await,
            Cmd::Restart(args) => commands::restart(&cli.global, args).await,
            Cmd::Scale(args) => commands::scale(&cli.global, args).await,
            Cmd::Rm(args) => commands::remove(&cli.global, args).await,
            Cmd::Node(cmd) => commands::node(&cli.global, cmd).await,
            Cmd::Workers => commands::workers(&cli.global).await,
            Cmd::Routes => commands::routes(&cli.global).await,
            Cmd::Cert(cmd) => commands::cert(&cli.global, cmd).await,
            Cmd::Events(args) => commands::events(&cli.global, args).await,
            Cmd::Top(args) => commands::top(&cli.global, args).await,
            Cmd::Import(args) => commands::import(args),
            Cmd::Db(cmd) => db::run(&cli.global, cmd).await,
            Cmd::Secret(cmd) => secrets::secret(&cli.global, cmd).await,
            Cmd::Run(args) => jobs::run(&cli.global, args).await,
            Cmd::Jobs(args) => jobs::jobs(&cli.global, args).await,
            Cmd::Acl(cmd) => secrets::acl(&cli.global, cmd).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The default data directory.
pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("holdfast");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/holdfast"),
        None => PathBuf::from("/var/lib/holdfast"),
    }
}
