//! API tokens and their scopes: what each `/v1` call needs, and whether a token's scope
//! grants it. Pure; the server asks [`check`] before doing anything.
//!
//! Scopes, as Nomad names its policies: `admin` (everything), `read` (every read that
//! reveals no credential), `project:<name>` (read, plus every change to that project:
//! deploys, services, its databases' URLs and switchovers, its secrets), and
//! `secrets:<project>/<name>,...` (only setting those secrets: what a job with
//! `secrets_write` gets). Tokens are stored hashed; the secret part is shown once.
use serde::{Deserialize, Serialize};

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Everything, as the admin token.
    Admin,
    /// Reads that reveal no credential.
    Read,
    /// Reads, and changes to one project.
    Project(String),
    /// Setting these secrets (`project/name` each), nothing else.
    SecretsWrite(Vec<String>),
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Admin => write!(f, "admin"),
            Scope::Read => write!(f, "read"),
            Scope::Project(p) => write!(f, "project:{p}"),
            Scope::SecretsWrite(s) => write!(f, "secrets:{}", s.join(",")),
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "unknown scope `{}`: use read, admin, project:<name> (e.g. project:shop) or secrets:<project>/<secret>[,...]",
                s.escape_debug()
            )
        };
        match s {
            "admin" => Ok(Scope::Admin),
            "read" => Ok(Scope::Read),
            _ => {
                if let Some(p) = s.strip_prefix("project:") {
                    crate::secrets::parse_key(&format!("{p}/x")).map_err(|_| bad())?;
                    Ok(Scope::Project(p.to_string()))
                } else if let Some(list) = s.strip_prefix("secrets:") {
                    let mut keys = Vec::new();
                    for k in list.split(',') {
                        crate::secrets::parse_key(k)?;
                        keys.push(k.to_string());
                    }
                    Ok(Scope::SecretsWrite(keys))
                } else {
                    Err(bad())
                }
            }
        }
    }
}

/// What one API call needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// A read that reveals no credential.
    Read,
    /// A change to (or a credential of) one project.
    Project(String),
    /// Setting one secret (`project`, `name`).
    SetSecret(String, String),
    /// Cluster administration: nodes, tokens, settings.
    Admin,
}

impl std::fmt::Display for Need {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Need::Read => write!(f, "read"),
            Need::Project(p) => write!(f, "project:{p}"),
            Need::SetSecret(p, n) => write!(f, "project:{p} or secrets:{p}/{n}"),
            Need::Admin => write!(f, "admin"),
        }
    }
}

/// `Ok` if `scope` grants `need`; else the refusal, naming the scope that was missing.
pub fn check(scope: &Scope, need: &Need) -> Result<(), String> {
    let ok = match (scope, need) {
        (Scope::Admin, _) => true,
        (Scope::Read, Need::Read) => true,
        (Scope::Project(_), Need::Read) => true,
        (Scope::Project(p), Need::Project(q)) => p == q,
        (Scope::Project(p), Need::SetSecret(q, _)) => p == q,
        (Scope::SecretsWrite(keys), Need::SetSecret(p, n)) => keys.contains(&crate::secrets::key(p, n)),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("this token's scope is {scope}; this call needs scope {need}; nothing was changed"))
    }
}

/// One API token (the secret part only hashed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiTokenRecord {
    /// A name for people (`ci`, `grafana`, `job shop/refresh`).
    pub name: String,
    pub scope: Scope,
    /// SHA-256 of the secret part, hex.
    pub secret_hash: String,
    pub created_at_ms: u64,
    /// Tokens made for a job's runs are removed with the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_scope_is_refused_outside_itself() {
        let shop = Scope::Project("shop".into());
        let key = Scope::SecretsWrite(vec!["shop/oauth".into()]);
        let needs = [
            Need::Read,
            Need::Project("shop".into()),
            Need::Project("blog".into()),
            Need::SetSecret("shop".into(), "oauth".into()),
            Need::SetSecret("shop".into(), "other".into()),
            Need::Admin,
        ];
        let table = |s: &Scope| needs.iter().map(|n| check(s, n).is_ok()).collect::<Vec<_>>();
        assert_eq!(table(&Scope::Admin), [true, true, true, true, true, true]);
        assert_eq!(table(&Scope::Read), [true, false, false, false, false, false]);
        assert_eq!(table(&shop), [true, true, false, true, true, false]);
        assert_eq!(table(&key), [false, false, false, true, false, false]);
        assert_eq!(
            check(&Scope::Read, &Need::Project("shop".into())).unwrap_err(),
            "this token's scope is read; this call needs scope project:shop; nothing was changed"
        );
    }

    #[test]
    fn scopes_parse_and_print() {
        for s in ["admin", "read", "project:shop", "secrets:shop/oauth,shop/other"] {
            assert_eq!(s.parse::<Scope>().unwrap().to_string(), s);
        }
        assert_eq!(
            "write".parse::<Scope>().unwrap_err(),
            "unknown scope `write`: use read, admin, project:<name> (e.g. project:shop) or secrets:<project>/<secret>[,...]"
        );
        assert!("project:Shop".parse::<Scope>().is_err());
        assert!("secrets:shop".parse::<Scope>().unwrap_err().contains("write <project>/<secret>"));
    }
}
