//! `holdfast db`: managed databases — status, connection URLs, an admin shell, and
//! planned switchovers.
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use holdfast_api::types::{DatabaseView, DbMemberView, SwitchoverRequest};

use crate::commands::client;
use crate::output::table;
use crate::Global;

#[derive(Subcommand, Debug)]
pub enum DbCmd {
    /// Members, roles, term, WAL positions, lag, the synchronous set, and what losing
    /// each node would cost right now.
    ///
    /// Example: holdfast db status db
    Status(StatusArgs),
    /// Print a connection URL with its password (for operators and scripts).
    ///
    /// `--endpoint rw` (default) reaches the primary (Redis: the master), `ro` the
    /// replicas only, `r` any member; every node serves these addresses. Redis also has
    /// `sentinel`: a Sentinel-compatible endpoint for Sentinel-aware clients (the path of
    /// its URL is the master name). `admin` is the superuser's URL on the primary (what
    /// `db psql` uses). Examples:
    ///   psql "$(holdfast db url db --endpoint ro)"
    ///   redis-cli -u "$(holdfast db url cache)" PING
    Url(UrlArgs),
    /// Open psql as the database's superuser on the primary (needs psql installed).
    Psql(PsqlArgs),
    /// Hand the primary role to another member without losing a committed write:
    /// the primary stops taking writes, the target catches up and is promoted. Writes
    /// pause for about a second; clients reconnect through the same URL.
    Switchover(SwitchoverArgs),
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Only this database.
    pub name: Option<String>,
}

#[derive(Args, Debug)]
pub struct UrlArgs {
    pub name: String,
    /// A user of the database (default: its first user).
    #[arg(long)]
    pub user: Option<String>,
    /// rw (the primary), ro (replicas only), r (any member), sentinel (Redis only), or
    /// admin (the superuser, on the primary).
    #[arg(long, default_value = "rw", value_parser = ["rw", "ro", "r", "sentinel", "admin"])]
    pub endpoint: String,
}

#[derive(Args, Debug)]
pub struct PsqlArgs {
    pub name: String,
    /// Extra arguments for psql, after `--`.
    #[arg(last = true)]
    pub args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct SwitchoverArgs {
    pub name: String,
    /// The node whose member becomes primary (default: the most advanced replica).
    #[arg(long)]
    pub to: Option<String>,
    /// Return once asked, without waiting for the new primary.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the new primary.
    #[arg(long, default_value = "30s", value_parser = crate::commands::parse_duration)]
    pub timeout: Duration,
}

pub async fn run(g: &Global, cmd: DbCmd) -> Result<ExitCode> {
    match cmd {
        DbCmd::Status(a) => status(g, a).await,
        DbCmd::Url(a) => {
            let r = client(g)?.database_url(&a.name, &a.endpoint, a.user.as_deref()).await?;
            if g.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!("{}", r.url);
            }
            Ok(ExitCode::SUCCESS)
        }
        DbCmd::Psql(a) => {
            let c = client(g)?;
            let dbs = c.databases().await?;
            if let Some(d) = dbs.databases.iter().find(|d| d.name == a.name && d.engine != "postgres") {
                bail!(
                    "`{}` is a {} database: psql does not speak to it; use e.g. redis-cli -u \"$(holdfast db url {} --endpoint admin)\"",
                    d.name,
                    d.engine,
                    d.name
                );
            }
            let r = c.database_url(&a.name, "admin", None).await?;
            let status = std::process::Command::new("psql").arg(&r.url).args(&a.args).status().map_err(|e| {
                anyhow!("cannot run psql ({e}); install PostgreSQL's client (Debian: postgresql-client)")
            })?;
            Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::from(status.code().unwrap_or(1) as u8) })
        }
        DbCmd::Switchover(a) => switchover(g, a).await,
    }
}

async fn status(g: &Global, a: StatusArgs) -> Result<ExitCode> {
    let mut r = client(g)?.databases().await?;
    if let Some(name) = &a.name {
        r.databases.retain(|d| &d.name == name);
        if r.databases.is_empty() {
            bail!("no database `{name}`");
        }
    }
    if g.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    if r.databases.is_empty() {
        println!("no databases (declare one under `databases:` in a spec and deploy it)");
    }
    for d in &r.databases {
        print!("{}", render(d));
    }
    if let Some(l) = r.lease.as_ref().filter(|_| !r.databases.is_empty()) {
        let ago = l.renewed_ms_ago.map_or("never renewed".to_string(), |ms| format!("renewed {ms} ms ago"));
        if l.held {
            println!("this node ({}) holds its lease ({ago}): it forwards writes to the primary", l.node);
        } else {
            println!(
                "this node ({}) holds NO lease ({ago}): it cannot reach the control plane's quorum with a current state, so it forwards no writes and serves no primary",
                l.node
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One database for people.
pub fn render(d: &DatabaseView) -> String {
    let redis = d.engine == "redis";
    let mode = match (redis, d.sync) {
        (true, 0) => "durability: none".to_string(),
        (true, _) => "durability: replicated".to_string(),
        (false, 0) => "async".to_string(),
        (false, k) => format!("sync ANY {k} (on loss: {})", d.on_sync_loss),
    };
    let primary = if redis { "master" } else { "primary" };
    let mut out = format!(
        "{} ({}, project {}): {} instance(s), {mode}, term {}, {primary} member {} on {}\n",
        d.name, d.engine, d.project, d.instances, d.term, d.primary, d.primary_node
    );
    for (e, addr) in &d.endpoints {
        let service = if redis && e == "rw" { d.name.clone() } else { format!("{}-{e}", d.name) };
        out.push_str(&format!("  {service}  {addr}\n"));
    }
    let rows: Vec<Vec<String>> = d
        .members
        .iter()
        .map(|m| {
            let mut row = vec![m.member.to_string(), m.node.clone(), m.role.clone(), m.term.to_string()];
            if redis {
                row.push(m.replay_lsn.to_string());
            } else {
                row.push(m.timeline.to_string());
                row.push(lsn(m.lsn));
            }
            row.push(m.lag_bytes.map(|b| format!("{b} B")).unwrap_or_else(|| "-".into()));
            row.push(if m.streaming { "yes" } else { "-" }.to_string());
            row.push(if m.pending_restart {
                format!("restart pending (changed settings); {}", m.detail)
            } else {
                m.detail.clone()
            });
            row
        })
        .collect();
    let headers: &[&str] = if redis {
        &["MEMBER", "NODE", "ROLE", "TERM", "OFFSET", "LAG", "STREAMING", "DETAIL"]
    } else {
        &["MEMBER", "NODE", "ROLE", "TERM", "TL", "LSN", "LAG", "STREAMING", "DETAIL"]
    };
    out.push_str(&table(headers, &rows));
    if d.sync > 0 && redis {
        out.push_str("a write is acknowledged once a replica has it (durability: replicated)\n");
    } else if d.sync > 0 {
        let who = |m: &DbMemberView| format!("member {} on {}", m.member, m.node);
        let listed: Vec<String> = d.members.iter().filter(|m| m.sync_candidate).map(who).collect();
        let mut line = format!("a commit waits for ANY {} of: {}", d.sync, listed.join(", "));
        let leaving: Vec<String> = d.members.iter().filter(|m| d.sync_leaving.contains(&m.member)).map(who).collect();
        if !leaving.is_empty() {
            line.push_str(&format!(" (dropping {}: a failover still counts it)", leaving.join(", ")));
        }
        out.push_str(&line);
        out.push('\n');
    }
    if let Some(s) = &d.switchover {
        out.push_str(&format!("switchover: {s}\n"));
    }
    for l in &d.losing {
        out.push_str(&format!("losing {l}\n"));
    }
    for w in &d.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out
}

/// `0/3000060` like PostgreSQL prints it.
fn lsn(v: u64) -> String {
    format!("{:X}/{:X}", v >> 32, v & 0xffff_ffff)
}

async fn switchover(g: &Global, a: SwitchoverArgs) -> Result<ExitCode> {
    let c = client(g)?;
    let r = c.switchover(&a.name, &SwitchoverRequest { to: a.to.clone() }).await?;
    if a.no_wait {
        println!("switchover of {} asked (term {})", r.database, r.from_term);
        return Ok(ExitCode::SUCCESS);
    }
    let started = Instant::now();
    loop {
        let dbs = c.databases().await?;
        let d =
            dbs.databases.iter().find(|d| d.name == a.name).ok_or_else(|| anyhow!("database `{}` is gone", a.name))?;
        let primary_ok = d.members.iter().any(|m| m.member == d.primary && m.role == "primary" && m.term == d.term);
        if d.term > r.from_term && primary_ok {
            println!(
                "{}: member {} on {} is the primary (term {}) after {:.1}s",
                d.name,
                d.primary,
                d.primary_node,
                d.term,
                started.elapsed().as_secs_f64()
            );
            return Ok(ExitCode::SUCCESS);
        }
        if d.term == r.from_term && d.switchover.is_none() && started.elapsed() > Duration::from_secs(1) {
            bail!("the switchover of {} was abandoned (the target did not catch up); the primary is unchanged", d.name);
        }
        if started.elapsed() > a.timeout {
            bail!("no new primary within {:?}: {}", a.timeout, d.switchover.clone().unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
