//! `holdfast secret` (set from stdin or a file, never the command line; list, history,
//! remove — values are never shown) and `holdfast acl token` (scoped API tokens).
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use holdfast_api::types::ApiTokenRequest;

use crate::commands::client;
use crate::output::{table, utc};
use crate::Global;

#[derive(Subcommand, Debug)]
pub enum SecretCmd {
    /// Set a new version of a secret from stdin (or --from-file); every service reading
    /// it rolls onto the new version, one instance at a time, each health-checked.
    ///
    /// The value is sealed on the cluster's leader before it is stored; it is never
    /// printed, logged or shown again. Bytes are kept exactly (a trailing newline too).
    ///
    /// Examples:
    ///   holdfast secret set shop/oauth-key < key.txt
    ///   holdfast secret set shop/oauth-key --from-file key.txt
    #[command(verbatim_doc_comment)]
    Set {
        /// <project>/<secret>, e.g. shop/oauth-key.
        secret: String,
        /// Read the value from this file instead of stdin.
        #[arg(long)]
        from_file: Option<PathBuf>,
    },
    /// Secrets: versions, when and by whom each was last set, the services reading it.
    Ls,
    /// The versions of one secret, newest first (current, previous — still readable
    /// during a roll — and retired).
    History {
        /// <project>/<secret>.
        secret: String,
    },
    /// Remove a secret and its history (refused while a service reads it).
    Rm {
        /// <project>/<secret>.
        secret: String,
    },
    /// Replace the cluster's secrets key: a new key is made on the leader, every readable
    /// secret version is resealed under it in one change, and every node fetches it (the
    /// ciphertext of the values is unchanged; only their data keys are re-wrapped).
    /// Consumers keep running. For keys kept in data directories (the default) the leader
    /// makes the new key; for `--secrets-key-file` clusters, first put a new key file
    /// (`holdfast secret keygen NEW`) in place of the key file on every node, then give it
    /// here: each node takes it from its file once the cluster has moved to it.
    RotateKey {
        /// The new key, for a cluster whose nodes read theirs from `--secrets-key-file`.
        #[arg(long, value_name = "FILE")]
        new_key_file: Option<PathBuf>,
    },
    /// Create a new cluster secrets key file (mode 0600), for `holdfast up
    /// --secrets-key-file FILE` on every node: the key then never sits in a data
    /// directory. Runs locally; refuses to replace an existing file.
    Keygen {
        /// Where to write the key.
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum AclCmd {
    /// API tokens besides the admin token.
    #[command(subcommand)]
    Token(AclTokenCmd),
}

#[derive(Subcommand, Debug)]
pub enum AclTokenCmd {
    /// Create an API token; it is printed once (only its hash is kept).
    ///
    /// Scopes: read (every read that shows no credential), project:<name> (read, and
    /// every change to that project: deploys, its services, databases and secrets),
    /// secrets:<project>/<secret>[,...] (setting those secrets only), admin.
    ///
    /// Example: holdfast acl token create --scope project:shop --name ci
    #[command(verbatim_doc_comment)]
    Create {
        /// read | project:<name> | secrets:<project>/<secret>[,...] | admin
        #[arg(long)]
        scope: String,
        /// A name for people, e.g. ci or grafana.
        #[arg(long)]
        name: String,
    },
    /// API tokens: id, name, scope, created (never the token).
    Ls,
    /// Remove an API token; it is refused from the next request on.
    Rm {
        /// The token's id (from `holdfast acl token ls`).
        id: String,
    },
}

fn split(secret: &str) -> Result<(&str, &str)> {
    holdfast_state::secrets::parse_key(secret).map_err(|e| anyhow!(e))
}

fn read_value(from_file: Option<&PathBuf>) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let mut buf = zeroize::Zeroizing::new(Vec::new());
    let limit = holdfast_secrets::MAX_SECRET_BYTES as u64 + 1;
    match from_file {
        Some(path) => {
            let f = std::fs::File::open(path).with_context(|| format!("cannot read --from-file {}", path.display()))?;
            f.take(limit).read_to_end(&mut buf).with_context(|| format!("cannot read {}", path.display()))?;
        }
        None => {
            use std::io::IsTerminal;
            if std::io::stdin().is_terminal() {
                eprintln!("reading the value from the terminal; end it with Ctrl-D (or use < file / --from-file)");
            }
            std::io::stdin().take(limit).read_to_end(&mut buf).context("cannot read the value from stdin")?;
        }
    }
    if buf.len() as u64 >= limit {
        bail!("a secret value may be at most {} bytes (nothing was stored)", holdfast_secrets::MAX_SECRET_BYTES);
    }
    if buf.is_empty() {
        bail!("the value is empty (nothing was stored): pipe it in, e.g. `holdfast secret set shop/key < key.txt`");
    }
    Ok(buf)
}

pub async fn secret(g: &Global, cmd: SecretCmd) -> Result<ExitCode> {
    match cmd {
        SecretCmd::RotateKey { new_key_file } => {
            let given = match &new_key_file {
                Some(path) => {
                    let key = holdfast_secrets::ClusterKey::load(path)?;
                    Some(holdfast_api::types::SecretKeyRotate { new_key: key.encode().to_string() })
                }
                None => None,
            };
            let r = client(g)?.rotate_secrets_key(given).await?;
            if g.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "secrets key rotated: {} -> {}; {} version(s) resealed; every node fetches the new key",
                    r.from.as_deref().unwrap_or("(none)"),
                    r.to,
                    r.resealed
                );
            }
        }
        SecretCmd::Keygen { file } => {
            let key = holdfast_secrets::ClusterKey::generate()?;
            key.write_new(&file)?;
            println!("secrets key {} written to {} (mode 0600)", key.id(), file.display());
            eprintln!(
                "start every node with `holdfast up --secrets-key-file {}` (copy the file to each)",
                file.display()
            );
        }
        SecretCmd::Set { secret, from_file } => {
            let (project, name) = split(&secret)?;
            let value = read_value(from_file.as_ref())?;
            let r = client(g)?.set_secret(project, name, value.to_vec()).await?;
            if g.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else if r.rolling.is_empty() {
                println!("{} version {} set ({} bytes); no service reads it yet", r.secret, r.version, r.size);
            } else {
                println!(
                    "{} version {} set ({} bytes); rolling {} one instance at a time (`holdfast status` shows progress)",
                    r.secret,
                    r.version,
                    r.size,
                    r.rolling.join(", ")
                );
            }
        }
        SecretCmd::Ls => {
            let r = client(g)?.secrets().await?;
            if g.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else if r.secrets.is_empty() {
                println!("no secrets (set one with `holdfast secret set <project>/<name> < file`)");
            } else {
                let rows: Vec<Vec<String>> = r
                    .secrets
                    .iter()
                    .map(|s| {
                        vec![
                            s.secret.clone(),
                            s.version.to_string(),
                            utc(s.updated_at_ms),
                            s.updated_by.clone(),
                            if s.used_by.is_empty() { "-".into() } else { s.used_by.join(",") },
                        ]
                    })
                    .collect();
                print!("{}", table(&["SECRET", "VERSION", "UPDATED", "BY", "USED BY"], &rows));
            }
        }
        SecretCmd::History { secret } => {
            let (project, name) = split(&secret)?;
            let r = client(g)?.secret_history(project, name).await?;
            if g.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                let rows: Vec<Vec<String>> = r
                    .versions
                    .iter()
                    .map(|v| {
                        vec![
                            v.version.to_string(),
                            v.state.clone(),
                            v.size.to_string(),
                            utc(v.set_at_ms),
                            v.set_by.clone(),
                        ]
                    })
                    .collect();
                print!("{}", table(&["VERSION", "STATE", "BYTES", "SET", "BY"], &rows));
                if !r.used_by.is_empty() {
                    println!("used by: {}", r.used_by.join(", "));
                }
            }
        }
        SecretCmd::Rm { secret } => {
            let (project, name) = split(&secret)?;
            let r = client(g)?.remove_secret(project, name).await?;
            if g.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!("{} removed with its history", r.secret);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn acl(g: &Global, cmd: AclCmd) -> Result<ExitCode> {
    let AclCmd::Token(cmd) = cmd;
    match cmd {
        AclTokenCmd::Create { scope, name } => {
            scope.parse::<holdfast_state::acl::Scope>().map_err(|e| anyhow!("--scope: {e}"))?;
            let r = client(g)?.create_api_token(&ApiTokenRequest { scope, name }).await?;
            if g.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!("{}", r.token);
                eprintln!(
                    "API token {} ({}), scope {}: shown this once. Use it with --token (or HOLDFAST_TOKEN).",
                    r.view.id, r.view.name, r.view.scope
                );
            }
        }
        AclTokenCmd::Ls => {
            let r = client(g)?.api_tokens().await?;
            if g.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else if r.tokens.is_empty() {
                println!("no API tokens besides the admin token (create one with `holdfast acl token create`)");
            } else {
                let rows: Vec<Vec<String>> = r
                    .tokens
                    .iter()
                    .map(|t| vec![t.id.clone(), t.name.clone(), t.scope.clone(), utc(t.created_at_ms)])
                    .collect();
                print!("{}", table(&["ID", "NAME", "SCOPE", "CREATED"], &rows));
            }
        }
        AclTokenCmd::Rm { id } => {
            let r = client(g)?.remove_api_token(&id).await?;
            if g.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!("API token {} ({}) removed", r.id, r.name);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
