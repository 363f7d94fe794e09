//! The leader's certificate duty: orders what `control::acme::due` says is due, one at a
//! time, with ACME HTTP-01 (instant-acme), and writes every step to the replicated state.
//!
//! An order: the account (created once per directory, its credentials sealed in the
//! state), a new order for the host, each challenge's key authorization proposed as
//! `PutAcmeChallenge` — so whichever edge the CA reaches answers it, the leader need not
//! be an edge — then a wait until every live edge serves it, `set_ready`, the CA's
//! validation, a fresh P-256 key and CSR (rcgen), the chain, and `PutAcmeCert` with the
//! key sealed. A failure anywhere is `AcmeOrderFailed` with the CA's words (an event; the
//! next attempt waits for the backoff). Challenges are removed either way.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use holdfast_state::acme::{AcmeConfig, ACCOUNT_SECRET, ACME_PROJECT};
use holdfast_state::secrets::SecretVersion;
use holdfast_state::{ClusterState, Command, Request};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use tokio_util::sync::CancellationToken;

use crate::NodeContext;

/// How long one order may take, start to certificate.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);
/// How long to wait for every live edge to serve a challenge before telling the CA.
const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the leader looks for due certificates when nothing changes.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// An error with its causes (`client error (Connect): ... : invalid peer certificate ...`).
fn why(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The ACME loop: on the leader, orders every due certificate in turn.
pub async fn run(ctx: NodeContext, cancel: CancellationToken) {
    let mut states = ctx.control.subscribe();
    loop {
        states.borrow_and_update();
        if ctx.control.is_leader() {
            let due = holdfast_control::acme::due(&ctx.control.state(), wall_ms());
            if due.is_empty() {
                ctx.workers.report("certificates", crate::workers::Pass::Steady);
            }
            for d in due {
                if cancel.is_cancelled() || !ctx.control.is_leader() {
                    break;
                }
                tracing::info!(host = %d.host, why = %d.why, "acme: ordering a certificate");
                ctx.workers
                    .report("certificates", crate::workers::Pass::Progress(format!("ordering {} ({})", d.host, d.why)));
                let result = match tokio::time::timeout(ORDER_TIMEOUT, order(&ctx, &d.host)).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("the order took longer than {ORDER_TIMEOUT:?}")),
                };
                if let Err(error) = result {
                    tracing::warn!(host = %d.host, %error, "acme: order failed");
                    ctx.workers.report(
                        "certificates",
                        crate::workers::Pass::Progress(format!("order for {} failed: {error}", d.host)),
                    );
                    let cmd = Command::AcmeOrderFailed { host: d.host.clone(), error, at_ms: wall_ms() };
                    if let Err(e) = ctx.control.propose(Request::new(cmd)).await {
                        tracing::warn!(host = %d.host, error = %e, "acme: cannot record the failed order");
                    }
                }
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            r = states.changed() => if r.is_err() { return },
            () = tokio::time::sleep(CHECK_EVERY) => {}
        }
    }
}

async fn propose(ctx: &NodeContext, cmd: Command) -> Result<(), String> {
    match ctx.control.propose(Request::new(cmd)).await.map_err(|e| e.to_string())? {
        holdfast_state::Response::Applied { .. } => Ok(()),
        other => Err(format!("the state refused the change: {other:?}")),
    }
}

/// The next version of secret `_acme/<name>`, sealed, as a command's payload.
fn seal_next(ctx: &NodeContext, state: &ClusterState, name: &str, value: &[u8]) -> Result<SecretVersion, String> {
    let key = holdfast_state::secrets::key(ACME_PROJECT, name);
    let version = state.secrets.get(&key).and_then(|r| r.current()).map_or(1, |c| c.version + 1);
    let sealed = ctx.keyring.seal(state.secrets_key_id.as_deref(), ACME_PROJECT, name, version, value)?;
    Ok(SecretVersion {
        version,
        sealed: Some(sealed),
        size: value.len() as u32,
        set_at_ms: wall_ms(),
        set_by: "acme".into(),
    })
}

fn builder(ctx: &NodeContext, config: &AcmeConfig) -> Result<instant_acme::AccountBuilder, String> {
    match &config.ca_pem {
        None => Account::builder().map_err(|e| format!("cannot set up the ACME client: {}", why(&e))),
        Some(pem) => {
            // instant-acme reads a custom root from a file.
            let path = ctx.data_dir.join("acme-ca.pem");
            std::fs::write(&path, pem).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Account::builder_with_root(&path).map_err(|e| format!("the ACME CA file is not usable: {}", why(&e)))
        }
    }
}

/// The account for the configured directory: the stored one, or a new one (stored).
async fn account(ctx: &NodeContext, state: &ClusterState, config: &AcmeConfig) -> Result<Account, String> {
    let builder = builder(ctx, config)?;
    let key = holdfast_state::secrets::key(ACME_PROJECT, ACCOUNT_SECRET);
    if state.acme.account_directory.as_deref() == Some(config.directory.as_str()) && state.secrets.contains_key(&key) {
        let plain = crate::secrets::open_current(&ctx.keyring, state, &key)?;
        let creds: AccountCredentials =
            serde_json::from_slice(&plain).map_err(|e| format!("the stored ACME account is unreadable: {e}"))?;
        return builder.from_credentials(creds).await.map_err(|e| format!("ACME account: {}", why(&e)));
    }
    let contact = config.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let new = NewAccount { contact: &contacts, terms_of_service_agreed: true, only_return_existing: false };
    let (account, creds) = builder
        .create(&new, config.directory.clone(), None)
        .await
        .map_err(|e| format!("cannot create an ACME account at {}: {}", config.directory, why(&e)))?;
    let json = zeroize::Zeroizing::new(serde_json::to_vec(&creds).map_err(|e| e.to_string())?);
    let credentials = seal_next(ctx, state, ACCOUNT_SECRET, &json)?;
    propose(ctx, Command::PutAcmeAccount { directory: config.directory.clone(), credentials }).await?;
    tracing::info!(directory = %config.directory, "acme: account created");
    Ok(account)
}

/// Waits until every live edge answers the challenge `token` with `key_auth` on its
/// public HTTP port (or the timeout: an edge behind NAT may not be reachable from here).
async fn wait_served(ctx: &NodeContext, host: &str, token: &str, key_auth: &str) {
    let deadline = tokio::time::Instant::now() + PROPAGATION_TIMEOUT;
    loop {
        let state = ctx.control.state();
        let failures = ctx.edge_failures.borrow().clone();
        let live = holdfast_control::edges::live_edges(&state, &failures);
        let edges = holdfast_control::edges::edge_nodes(&state);
        let targets: Vec<std::net::SocketAddr> = edges
            .iter()
            .filter(|(_, e)| live.addresses.contains(&e.public_address))
            .map(|(_, e)| std::net::SocketAddr::new(e.public_address, e.http_port))
            .collect();
        let checks = targets.iter().map(|addr| serves(*addr, host, token, key_auth));
        let all = futures::future::join_all(checks).await.into_iter().all(|ok| ok);
        if all || tokio::time::Instant::now() >= deadline {
            if !all {
                tracing::info!(host, "acme: not every edge serves the challenge yet; telling the CA anyway");
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the edge at `addr` answers the challenge.
async fn serves(addr: std::net::SocketAddr, host: &str, token: &str, key_auth: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req =
            format!("GET /.well-known/acme-challenge/{token} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut body = Vec::new();
        s.read_to_end(&mut body).await.ok()?;
        let text = String::from_utf8_lossy(&body);
        Some(text.starts_with("HTTP/1.1 200") && text.ends_with(key_auth))
    };
    matches!(tokio::time::timeout(Duration::from_secs(1), attempt).await, Ok(Some(true)))
}

/// One order for `host`, start to `PutAcmeCert`.
async fn order(ctx: &NodeContext, host: &str) -> Result<(), String> {
    let state = ctx.control.state();
    let config = state.acme.config.clone();
    let account = account(ctx, &state, &config).await?;
    let ids = [Identifier::Dns(host.to_string())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await.map_err(|e| format!("new order: {}", why(&e)))?;
    let mut tokens = Vec::new();
    let outcome = async {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(|e| format!("authorization: {}", why(&e)))?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(format!("the authorization for {host} is {other:?}")),
            }
            let mut challenge = authz
                .challenge(ChallengeType::Http01)
                .ok_or_else(|| format!("the CA offers no http-01 challenge for {host}"))?;
            let token = challenge.token.clone();
            let key_auth = challenge.key_authorization().as_str().to_string();
            propose(ctx, Command::PutAcmeChallenge { token: token.clone(), key_authorization: key_auth.clone() })
                .await?;
            tokens.push(token.clone());
            wait_served(ctx, host, &token, &key_auth).await;
            challenge.set_ready().await.map_err(|e| format!("challenge: {}", why(&e)))?;
        }
        let retry = RetryPolicy::new().timeout(Duration::from_secs(60));
        let status = order.poll_ready(&retry).await.map_err(|e| format!("waiting for validation: {}", why(&e)))?;
        if status != OrderStatus::Ready {
            return Err(validation_error(&mut order, host, status).await);
        }
        let key = rcgen::KeyPair::generate().map_err(|e| format!("key: {e}"))?;
        let csr = rcgen::CertificateParams::new(vec![host.to_string()])
            .and_then(|p| p.serialize_request(&key))
            .map_err(|e| format!("CSR: {e}"))?;
        order.finalize_csr(csr.der()).await.map_err(|e| format!("finalize: {}", why(&e)))?;
        let chain = order.poll_certificate(&retry).await.map_err(|e| format!("certificate: {}", why(&e)))?;
        Ok((chain, zeroize::Zeroizing::new(key.serialize_pem())))
    }
    .await;
    for token in tokens {
        if let Err(e) = propose(ctx, Command::RemoveAcmeChallenge { token }).await {
            tracing::debug!(error = %e, "acme: challenge not removed (the next leader's order replaces it)");
        }
    }
    let (chain, key_pem) = outcome?;
    let served = holdfast_net::ServedCert::from_pem(chain.as_bytes(), key_pem.as_bytes())
        .map_err(|e| format!("the CA's certificate is not usable: {e}"))?;
    if !served.covers(host) {
        return Err(format!("the CA's certificate is for {}, not {host}", served.names().join(", ")));
    }
    let state = ctx.control.state();
    let key = seal_next(ctx, &state, host, key_pem.as_bytes())?;
    let not_before_ms = wall_ms();
    let cert = holdfast_state::acme::AcmeCert {
        chain_pem: chain,
        not_before_ms: served_not_before(&served, not_before_ms),
        not_after_ms: u64::try_from(served.not_after()).unwrap_or(0) * 1000,
        issued_at_ms: wall_ms(),
        directory: config.directory.clone(),
    };
    propose(ctx, Command::PutAcmeCert { host: host.to_string(), cert, key }).await?;
    tracing::info!(host, until = %holdfast_spec::format_utc_ms(u64::try_from(served.not_after()).unwrap_or(0) * 1000), "acme: certificate issued");
    Ok(())
}

/// The certificate's own start of validity, or `fallback` when it lies in the future.
fn served_not_before(served: &holdfast_net::ServedCert, fallback: u64) -> u64 {
    let nb = u64::try_from(served.not_before()).unwrap_or(0) * 1000;
    if nb == 0 || nb > fallback {
        fallback
    } else {
        nb
    }
}

/// Why validation failed, in the CA's words.
async fn validation_error(order: &mut instant_acme::Order, host: &str, status: OrderStatus) -> String {
    let mut why = Vec::new();
    if let Some(problem) = &order.state().error {
        why.push(problem.to_string());
    }
    let mut authorizations = order.authorizations();
    while let Some(Ok(authz)) = authorizations.next().await {
        for c in &authz.challenges {
            if let Some(problem) = &c.error {
                why.push(problem.to_string());
            }
        }
    }
    if why.is_empty() {
        format!("the order for {host} is {status:?}")
    } else {
        format!("the CA did not validate {host}: {}", why.join("; "))
    }
}
