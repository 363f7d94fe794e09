//! `holdfast up`: run a node in the foreground until SIGINT/SIGTERM (stop everything) or
//! SIGUSR2 / `holdfast node reexec` (re-execute the binary, workloads keep running).
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use holdfast_node::{Exit, Node, NodeConfig};
use tokio::signal::unix::{signal, SignalKind};

use crate::{commands, Global};

/// The demo stack compiled into the binary (`holdfast up --demo`).
const DEMO_SPEC: &str = include_str!("../../../examples/demo/holdfast.yaml");

/// Set in the environment of a re-executed node so it does not deploy its command-line
/// specs again (they may be older than what was deployed since).
const REEXEC_ENV: &str = "HOLDFAST_REEXECUTED";

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Spec files to deploy once the node is up.
    pub specs: Vec<PathBuf>,
    /// Deploy the built-in demo stack (needs `holdfast-demo-web` on PATH).
    #[arg(long, conflicts_with = "specs")]
    pub demo: bool,
    /// Address of the holdfast port (API and node-to-node traffic, all TLS).
    #[arg(long, default_value = "127.0.0.1:7946")]
    pub listen: SocketAddr,
    /// The address other nodes reach this one at, when --listen is 0.0.0.0 or behind NAT.
    #[arg(long)]
    pub advertise: Option<SocketAddr>,
    /// HTTP ingress: routes requests by Host and path prefix to services ("off" disables).
    #[arg(long, default_value = "127.0.0.1:8080", value_parser = parse_optional_addr)]
    pub http: OptionalAddr,
    /// Internal DNS server for <service>.<project>.internal names ("off" disables).
    #[arg(long, default_value = "127.0.0.1:8053", value_parser = parse_optional_addr)]
    pub dns: OptionalAddr,
    /// Node name (default: the host name); fixed when the data directory is created.
    #[arg(long)]
    pub name: Option<String>,
    /// Site (location) of this machine, used to spread replicas and voters; also the
    /// node's built-in label `site` (e.g. `node_selector: {site: seoul}`).
    #[arg(long, default_value = "default", value_parser = parse_site)]
    pub site: String,
    /// The CPU architecture to report, in image platform names (amd64, arm64, arm), when
    /// it is not the one this binary was built for: replicas of an image go only on
    /// nodes of an architecture the image offers. Also the built-in label `arch`.
    #[arg(long, value_parser = parse_arch)]
    pub arch: Option<String>,
    /// A node label KEY=VALUE for placement rules (repeatable), e.g. `--label gpu=true
    /// --label disk=ssd`; services select nodes with `placement.node_selector`. Applied
    /// when the node first starts and again on each start that gives it; labels not given
    /// are left as they are (remove one with `holdfast node label NODE KEY-`). The
    /// built-in labels name, site and arch cannot be set.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_start_label)]
    pub labels: Vec<(String, String)>,
    /// Range of listen ports handed to instances, e.g. 20000-29999.
    #[arg(long, default_value = "20000-29999", value_parser = parse_port_range)]
    pub port_range: std::ops::Range<u16>,
    /// Read the cluster's secrets key from this file (mode 0600) instead of keeping it in
    /// the data directory: it is never copied there nor handed to other nodes, so give
    /// every node the same file (e.g. on a separate disk or a tmpfs filled at boot).
    /// Create it once with `holdfast secret keygen FILE`. Without this flag the key is
    /// `secrets.key` in the data directory, handed to joining nodes over mutual TLS.
    #[arg(long, value_name = "FILE")]
    pub secrets_key_file: Option<PathBuf>,
    /// Make this node an edge: it takes public HTTP and HTTPS for every route of every
    /// project (certificates chosen by SNI, h2 by ALPN) and answers the spec's `dns:`
    /// zones authoritatively, with the addresses of the edges that are alive. Needs
    /// --public-address.
    #[arg(long, requires = "public_address")]
    pub edge: bool,
    /// The address clients reach this edge at (what DNS answers for routed hosts), e.g.
    /// 203.0.113.10.
    #[arg(long, value_name = "IP", requires = "edge")]
    pub public_address: Option<std::net::IpAddr>,
    /// Where the edge's listeners bind (default: the public address; use 0.0.0.0 behind
    /// NAT or a router's port-forward, where the public address is not this machine's).
    #[arg(long, value_name = "IP", requires = "edge")]
    pub edge_listen: Option<std::net::IpAddr>,
    /// The edge's plain-HTTP port (redirects to HTTPS where a route asks, and routes
    /// without TLS).
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u16).range(1..))]
    pub edge_http_port: u16,
    /// The edge's HTTPS port.
    #[arg(long, default_value_t = 443, value_parser = clap::value_parser!(u16).range(1..))]
    pub edge_https_port: u16,
    /// The edge's authoritative DNS port (UDP and TCP); 0 turns the DNS server off.
    #[arg(long, default_value_t = 53)]
    pub edge_dns_port: u16,
    /// A moving address of this site, e.g. 192.168.1.50/24: give the same one to every
    /// edge of the site; the first live one (by name) holds it and announces it with
    /// gratuitous ARP, the next takes it within about a second when that one dies, so a
    /// LAN client or a router's port-forward keeps working. Needs root and `arping`
    /// (iputils-arping); the edge should listen on 0.0.0.0 (--edge-listen).
    #[arg(long, value_name = "IP/PREFIX", requires = "edge", value_parser = parse_site_address)]
    pub site_address: Option<String>,
    /// The interface the site address goes on (default: the one the kernel routes it
    /// through).
    #[arg(long, value_name = "IFACE", requires = "site_address")]
    pub site_address_interface: Option<String>,
    /// Log filter (error, warn, info, debug, trace, or a tracing directive); RUST_LOG wins.
    #[arg(long, default_value = "info,openraft=error")]
    pub log_level: String,
}

#[derive(Args, Debug)]
pub struct JoinArgs {
    /// The token printed by `holdfast token create` on a member.
    pub token: String,
    #[command(flatten)]
    pub up: UpArgs,
}

/// An address, or `off`.
#[derive(Debug, Clone, Copy)]
pub struct OptionalAddr(pub Option<SocketAddr>);

fn parse_optional_addr(s: &str) -> std::result::Result<OptionalAddr, String> {
    if s == "off" {
        return Ok(OptionalAddr(None));
    }
    s.parse().map(|a| OptionalAddr(Some(a))).map_err(|_| format!("invalid address `{s}`: expected IP:PORT or off"))
}

fn parse_arch(s: &str) -> Result<String, String> {
    let ok = !s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{s}` is not an architecture name: lowercase letters and digits, as images name them (amd64, arm64, arm)"
        ))
    }
}

fn parse_site(s: &str) -> std::result::Result<String, String> {
    match holdfast_spec::names::label_value_problem("site", s) {
        None => Ok(s.to_string()),
        Some(problem) => Err(format!("invalid site: {problem}")),
    }
}

fn parse_start_label(s: &str) -> std::result::Result<(String, String), String> {
    match holdfast_state::labels::parse_label_arg(s)? {
        holdfast_state::labels::LabelChange::Set(k, v) => Ok((k, v)),
        holdfast_state::labels::LabelChange::Remove(k) => Err(format!(
            "`{s}` removes a label; --label only sets one (KEY=VALUE). Remove it with `holdfast node label NODE {k}-`"
        )),
    }
}

fn parse_port_range(s: &str) -> std::result::Result<std::ops::Range<u16>, String> {
    let (a, b) =
        s.split_once('-').ok_or_else(|| format!("invalid port range `{s}`: expected FIRST-LAST, e.g. 20000-29999"))?;
    let a: u16 = a.trim().parse().map_err(|_| format!("invalid first port `{a}` in `{s}`"))?;
    let b: u16 = b.trim().parse().map_err(|_| format!("invalid last port `{b}` in `{s}`"))?;
    if a == 0 || b < a || b == u16::MAX {
        return Err(format!("invalid port range `{s}`: need 1 <= FIRST <= LAST < 65535"));
    }
    Ok(a..b + 1)
}

pub async fn run(g: &Global, args: UpArgs, join: Option<String>) -> Result<ExitCode> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&args.log_level))
        .map_err(|e| anyhow!("invalid --log-level `{}`: {e}", args.log_level))?;
    // Colours only on a terminal: a log file or journald gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();

    let reexecuted = std::env::var_os(REEXEC_ENV).is_some();
    // A bad spec fails before anything starts.
    let stack = if reexecuted {
        None
    } else if args.demo {
        Some(holdfast_spec::parse_str("(built-in demo)", DEMO_SPEC).map_err(|e| anyhow!("built-in demo spec: {e}"))?)
    } else if !args.specs.is_empty() {
        Some(
            holdfast_spec::load_files(&args.specs)
                .map_err(|e| anyhow!("the spec is invalid; nothing was started:\n{e}"))?,
        )
    } else {
        None
    };

    let data_dir = g.data_dir.clone().unwrap_or_else(crate::default_data_dir);
    let exe = std::env::current_exe().context("cannot find this program's path (needed for re-exec)")?;
    let node = Node::start(NodeConfig {
        data_dir: data_dir.clone(),
        listen: args.listen,
        advertise: args.advertise,
        join,
        http: args.http.0,
        dns: args.dns.0,
        name: args.name.clone(),
        site: args.site.clone(),
        arch: args.arch.clone(),
        labels: labels_of(&args)?,
        port_range: args.port_range.clone(),
        secrets_key_file: args.secrets_key_file.clone(),
        edge: edge_of(&args)?,
    })
    .await
    .with_context(|| format!("cannot start the node with data directory {}", data_dir.display()))?;
    let ctx = node.ctx.clone();

    // Signals: INT/TERM stop everything; USR2 re-executes.
    let shutdown = ctx.shutdown.clone();
    let reexec = ctx.reexec.clone();
    let mut sigint = signal(SignalKind::interrupt()).context("signal handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("signal handler")?;
    let mut sigusr2 = signal(SignalKind::user_defined2()).context("signal handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = sigint.recv() => tracing::info!("SIGINT: stopping"),
            _ = sigterm.recv() => tracing::info!("SIGTERM: stopping"),
            _ = sigusr2.recv() => {
                tracing::info!("SIGUSR2: re-executing; workloads keep running");
                reexec.store(true, Ordering::SeqCst);
            }
        }
        shutdown.cancel();
    });

    eprintln!(
        "holdfast node {} listening on {} (data: {}); stop with Ctrl-C",
        ctx.identity.name,
        ctx.listen,
        data_dir.display()
    );
    if let Some(stack) = stack {
        let client = holdfast_api::Client::new(
            format!("https://{}", ctx.listen),
            ctx.identity.admin_token.clone(),
            &ctx.identity.ca_pem,
        )?;
        let g = g.clone();
        let stop = ctx.shutdown.clone();
        let http = args.http.0;
        tokio::spawn(async move {
            match commands::deploy_stack(&g, &client, stack, Duration::from_secs(120), false).await {
                Ok(_) => print_endpoints(&client, http).await,
                Err(e) if stop.is_cancelled() => tracing::debug!(error = %e, "deploy interrupted by shutdown"),
                Err(e) => eprintln!("error: deploy failed: {e:#}"),
            }
        });
    }

    match node.run_until_stopped().await {
        Exit::Stopped => Ok(ExitCode::SUCCESS),
        Exit::Reexec => {
            let err = std::process::Command::new(&exe).args(std::env::args_os().skip(1)).env(REEXEC_ENV, "1").exec();
            Err(anyhow!("re-exec of {} failed: {err}; workloads are still running and will be adopted by the next `holdfast up`", exe.display()))
        }
    }
}

/// `IP/PREFIX`, e.g. `192.168.1.50/24` or `2001:db8::50/64`, in canonical form.
fn parse_site_address(s: &str) -> std::result::Result<String, String> {
    let bad = || format!("invalid site address `{s}`: expected IP/PREFIX, e.g. 192.168.1.50/24");
    let (ip, prefix) = s.split_once('/').ok_or_else(bad)?;
    let ip: std::net::IpAddr = ip.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if prefix == 0 || prefix > max {
        return Err(format!("invalid site address `{s}`: the prefix must be 1 to {max}"));
    }
    if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() {
        return Err(format!("invalid site address `{s}`: use a unicast address of the site's network"));
    }
    Ok(format!("{ip}/{prefix}"))
}

/// The edge flags as the node's edge role (`None` without `--edge`).
fn edge_of(args: &UpArgs) -> Result<Option<holdfast_node::EdgeConfig>> {
    if !args.edge {
        return Ok(None);
    }
    let public_address = args.public_address.ok_or_else(|| anyhow!("--edge needs --public-address IP"))?;
    let ports = [("--edge-http-port", args.edge_http_port), ("--edge-https-port", args.edge_https_port)];
    if args.edge_http_port == args.edge_https_port {
        return Err(anyhow!("{} and {} are both {}: give them different ports", ports[0].0, ports[1].0, ports[0].1));
    }
    Ok(Some(holdfast_node::EdgeConfig {
        public_address,
        listen_address: args.edge_listen.unwrap_or(public_address),
        http_port: args.edge_http_port,
        https_port: args.edge_https_port,
        dns_port: args.edge_dns_port,
        site_address: args.site_address.clone().map(|a| (a, args.site_address_interface.clone())),
    }))
}

/// The `--label` flags as a map; the same key twice is a usage error.
fn labels_of(args: &UpArgs) -> Result<std::collections::BTreeMap<String, String>> {
    let mut labels = std::collections::BTreeMap::new();
    for (k, v) in &args.labels {
        if let Some(old) = labels.insert(k.clone(), v.clone()) {
            if &old != v {
                return Err(anyhow!("--label {k} is given twice ({k}={old} and {k}={v}); give one value"));
            }
        }
    }
    Ok(labels)
}

async fn print_endpoints(client: &holdfast_api::Client, http: Option<SocketAddr>) {
    let Ok(st) = client.status().await else { return };
    println!("\nEndpoints:");
    for s in &st.services {
        for i in &s.instances {
            for (name, port) in &i.ports {
                println!("  {:<12} {:<8} http://127.0.0.1:{port}/", i.name, name);
            }
        }
    }
    for s in &st.services {
        for (name, port) in &s.ports {
            println!("  {:<12} {:<8} {}:{port}  (service address, any ready instance)", s.name, name, s.address);
        }
    }
    if let Some(http) = http {
        for r in &st.routes {
            println!("  http://{}:{}{}  ->  {}:{}  (ingress)", r.host, http.port(), r.path, r.service, r.port);
        }
    }
    println!("\n`holdfast status` shows more; Ctrl-C stops the node and every workload.");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_addresses() {
        assert_eq!(parse_site_address("192.168.1.50/24").as_deref(), Ok("192.168.1.50/24"));
        assert_eq!(parse_site_address("2001:db8:0::50/64").as_deref(), Ok("2001:db8::50/64"));
        for (bad, why) in [
            ("192.168.1.50", "invalid site address `192.168.1.50`: expected IP/PREFIX, e.g. 192.168.1.50/24"),
            ("192.168.1.50/33", "invalid site address `192.168.1.50/33`: the prefix must be 1 to 32"),
            ("192.168.1.50/0", "invalid site address `192.168.1.50/0`: the prefix must be 1 to 32"),
            ("nope/24", "invalid site address `nope/24`: expected IP/PREFIX, e.g. 192.168.1.50/24"),
            ("127.0.0.1/8", "invalid site address `127.0.0.1/8`: use a unicast address of the site's network"),
            ("224.0.0.1/24", "invalid site address `224.0.0.1/24`: use a unicast address of the site's network"),
        ] {
            assert_eq!(parse_site_address(bad), Err(why.to_string()), "{bad}");
        }
    }
}
