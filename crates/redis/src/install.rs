//! Which Redis this machine offers and which OS user runs it.
//!
//! `redis-server` is the spec's `bin_dir/redis-server`, or the first on `PATH`, then
//! `/usr/bin` (Debian's `redis-server` package). The version comes from
//! `redis-server --version` (`Redis server v=7.0.15 ...`). A daemon running as root runs
//! members as the `redis` user Debian's package creates; one running as another user
//! runs them as itself.
use std::path::{Path, PathBuf};

use holdfast_agent::osuser::OsUser;

use crate::RedisError;

/// A Redis installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    /// The `redis-server` program.
    pub server: PathBuf,
    /// Major version, e.g. `7`.
    pub major: u32,
    /// Full version, e.g. `7.0.15`.
    pub version: String,
}

/// Finds `redis-server` (in `bin_dir` when given) and its version.
pub fn discover(bin_dir: Option<&Path>) -> Result<Binaries, RedisError> {
    let server = match bin_dir {
        Some(dir) => dir.join("redis-server"),
        None => {
            let path = std::env::var_os("PATH").unwrap_or_default();
            std::env::split_paths(&path)
                .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
                .map(|d| d.join("redis-server"))
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    RedisError::NotInstalled(
                        "redis-server is not on PATH nor in /usr/bin (install Debian's redis-server package, or set the database's bin_dir)".into(),
                    )
                })?
        }
    };
    if !server.is_file() {
        return Err(RedisError::NotInstalled(format!("{} does not exist", server.display())));
    }
    let out = std::process::Command::new(&server)
        .arg("--version")
        .output()
        .map_err(|e| RedisError::NotInstalled(format!("cannot run {}: {e}", server.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = parse_version(&text)
        .ok_or_else(|| RedisError::NotInstalled(format!("{} --version said {:?}", server.display(), text.trim())))?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < (6, 2) {
        return Err(RedisError::NotInstalled(format!(
            "{} is Redis {version}; holdfast needs Redis 6.2 or newer (ACL users, CLIENT PAUSE WRITE)",
            server.display()
        )));
    }
    Ok(Binaries { server, major, version })
}

/// `7.0.15` from `Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=...`.
pub fn parse_version(text: &str) -> Option<String> {
    let v = text.split_whitespace().find_map(|w| w.strip_prefix("v="))?;
    v.chars().next().filter(char::is_ascii_digit)?;
    Some(v.to_string())
}

/// The user members run as: `redis` when the daemon is root, the daemon's own user
/// otherwise.
pub fn member_user() -> Result<OsUser, RedisError> {
    OsUser::for_server(
        "redis",
        "holdfast runs as root and runs Redis as the `redis` user (created by Debian's redis-server package), which is missing",
    )
    .map_err(|why| RedisError::User { user: "redis".into(), why })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        let text = "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=c4d1f4bf6e1b0e26\n";
        assert_eq!(parse_version(text).as_deref(), Some("7.0.15"));
        assert_eq!(parse_version("Redis server v=6.2.6 sha=0").as_deref(), Some("6.2.6"));
        assert_eq!(parse_version("nonsense"), None);
        assert_eq!(parse_version("x v=abc"), None);
    }
}
