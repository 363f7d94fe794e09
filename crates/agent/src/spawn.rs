//! Launching a workload process: argv, environment, working directory,
//! stdin from /dev/null, stdout+stderr straight into the instance log file
//! (no pipes, so output keeps flowing if the agent dies), its own session
//! and process group, and cgroup membership before exec.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::error::AgentError;
use crate::types::InstanceSpec;

/// PATH given to workloads whose env does not set one and when the agent
/// has none either.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The environment of an instance: its spec env, `PATH` (the agent's when the
/// spec has none), `PORT`/`PORT_<NAME>`, and `HOLDFAST_SERVICE`,
/// `HOLDFAST_INSTANCE`, `HOLDFAST_REPLICA`.
pub(crate) fn instance_env(spec: &InstanceSpec, ports: &BTreeMap<String, u16>) -> BTreeMap<String, String> {
    let mut env = spec.env.clone();
    if !env.contains_key("PATH") {
        let path = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.to_string());
        env.insert("PATH".to_string(), path);
    }
    if let Some(p) = spec.ports.first().and_then(|n| ports.get(n)) {
        env.insert("PORT".to_string(), p.to_string());
    }
    for name in &spec.ports {
        if let Some(p) = ports.get(name) {
            env.insert(format!("PORT_{}", port_env_suffix(name)), p.to_string());
        }
    }
    env.insert("HOLDFAST_SERVICE".to_string(), spec.id.service.clone());
    env.insert("HOLDFAST_INSTANCE".to_string(), spec.id.to_string());
    env.insert("HOLDFAST_REPLICA".to_string(), spec.id.replica.to_string());
    env
}

/// `http-admin` -> `HTTP_ADMIN`.
pub(crate) fn port_env_suffix(name: &str) -> String {
    name.chars().map(|c| if c == '-' { '_' } else { c.to_ascii_uppercase() }).collect()
}

pub(crate) struct Launch {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Secret values for the environment (zeroed here once the child has them).
    pub secret_env: Vec<(String, zeroize::Zeroizing<Vec<u8>>)>,
    /// Bind mounts in a private mount namespace: (source, target) directories.
    pub mounts: Vec<(std::ffi::CString, std::ffi::CString)>,
    pub workdir: Option<PathBuf>,
    pub log: File,
    pub cgroup_procs: Vec<OwnedFd>,
    pub run_as: Option<crate::types::RunAs>,
}

/// Forks and execs the workload; returns its pid (= its pgid and sid).
/// The `Child` handle is dropped without waiting: exits are collected by
/// `proc::ExitWatcher`.
pub(crate) fn spawn(launch: Launch) -> Result<u32, AgentError> {
    let program = launch.argv.first().cloned().unwrap_or_default();
    let err = |source| AgentError::Spawn { program: program.clone(), source };
    if program.is_empty() {
        return Err(err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty argv")));
    }
    let stderr = launch.log.try_clone().map_err(err)?;
    let mut cmd = Command::new(&program);
    cmd.args(&launch.argv[1..])
        .env_clear()
        .envs(&launch.env)
        .envs(launch.secret_env.iter().map(|(k, v)| {
            use std::os::unix::ffi::OsStrExt;
            (k.as_str(), std::ffi::OsStr::from_bytes(v))
        }))
        .stdin(Stdio::null())
        .stdout(Stdio::from(launch.log))
        .stderr(Stdio::from(stderr));
    if let Some(dir) = &launch.workdir {
        cmd.current_dir(dir);
    }
    if let Some(user) = launch.run_as {
        use std::os::unix::process::CommandExt;
        // std drops supplementary groups, then sets the group and the user, before the
        // pre-exec hook joins the cgroup through descriptors opened as the agent.
        cmd.gid(user.gid).uid(user.uid);
    }
    crate::preexec::install(&mut cmd, launch.cgroup_procs, launch.mounts);
    let child = cmd.spawn().map_err(err)?;
    Ok(child.id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::InstanceId;

    #[test]
    fn env_has_ports_and_identity() {
        let mut spec = InstanceSpec::new(InstanceId::new("web", 2), vec!["true".into()]);
        spec.ports = vec!["http".into(), "admin-api".into()];
        spec.env.insert("FOO".into(), "bar".into());
        let ports = BTreeMap::from([("http".to_string(), 20001), ("admin-api".to_string(), 20002)]);
        let env = instance_env(&spec, &ports);
        assert_eq!(env["PORT"], "20001");
        assert_eq!(env["PORT_HTTP"], "20001");
        assert_eq!(env["PORT_ADMIN_API"], "20002");
        assert_eq!(env["HOLDFAST_SERVICE"], "web");
        assert_eq!(env["HOLDFAST_INSTANCE"], "web-2");
        assert_eq!(env["HOLDFAST_REPLICA"], "2");
        assert_eq!(env["FOO"], "bar");
        assert!(env.contains_key("PATH"));
    }
}
