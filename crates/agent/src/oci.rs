//! The OCI driver: an instance with an image runs as a container under podman (Debian's
//! `podman` package), with the process driver's contract.
//!
//! Why podman, run in the foreground: the agent launches `podman run` as the instance's
//! process (its own session, stdout and stderr into the instance log, as any process),
//! so the rest of the agent is the same for both drivers. podman pulls the image
//! (`--pull missing`; the registry protocol and its auth are podman's, not ours), and
//! conmon, not the client, holds the container: a daemon crash or re-exec leaves it
//! running and the next agent re-adopts the client's pid like any instance. The
//! container gets the host network (it listens on `$PORT` like a process; health checks
//! are the same), the instance's environment (`-e NAME`, values from the client's own
//! environment, so no secret is ever on a command line), secret files as read-only bind
//! mounts, `--init` so the stop signal reaches the program, the agent's own open-file
//! limit (and at most [`CONTAINER_NPROC`] processes), and `--cgroup-parent` the
//! instance's cgroup, so the limits, usage, OOM counter and kill-all of processes cover
//! the container and conmon too. Without cgroups, podman's `--memory`/`--cpus` hold the
//! limits instead. After an exit or stop the container is removed by name (`rm -f`), so
//! the name is free and nothing is left in the node's image store but images.
//!
//! Exec health checks run inside the container ([`exec_argv`]).
//!
//! Pure: [`run_argv`], [`exec_argv`] and [`remove_argv`] build command lines; the agent
//! runs them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::types::Limits;

/// An image to run, and how to reach its registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OciImage {
    /// Fully qualified (`registry/repository:tag[@digest]`).
    pub reference: String,
    /// Plain HTTP (and no certificate check) allowed: a loopback registry, or one the
    /// cluster lists as insecure.
    #[serde(default)]
    pub insecure: bool,
}

/// Where the node's podman keeps its images and containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciConfig {
    /// The podman binary.
    pub podman: PathBuf,
    /// Image and container storage (`--root`); per node, so each node pulls its own.
    pub root: PathBuf,
    /// Runtime state (`--runroot`).
    pub runroot: PathBuf,
    /// The OCI runtime (`--runtime`): `runc` when installed (crun 1.8 refuses cgroup v1
    /// "hybrid" hosts), else podman's default.
    pub runtime: Option<String>,
}

impl OciConfig {
    /// Storage under `state_dir/oci`, the `podman` on `PATH`, and runc when present.
    pub fn under(state_dir: &Path) -> Self {
        let runtime = ["/usr/sbin/runc", "/usr/bin/runc"].iter().find(|p| Path::new(p).exists()).map(|_| "runc".into());
        OciConfig {
            podman: PathBuf::from("podman"),
            root: state_dir.join("oci").join("storage"),
            runroot: state_dir.join("oci").join("run"),
            runtime,
        }
    }

    fn global(&self) -> Vec<String> {
        let mut out = vec![
            self.podman.display().to_string(),
            "--root".into(),
            self.root.display().to_string(),
            "--runroot".into(),
            self.runroot.display().to_string(),
            "--cgroup-manager".into(),
            "cgroupfs".into(),
            // No event journal (systemd's may be absent); nothing reads podman's events.
            "--events-backend".into(),
            "none".into(),
        ];
        if let Some(r) = &self.runtime {
            out.extend(["--runtime".into(), r.clone()]);
        }
        out
    }
}

/// The container's name for an instance (one podman store per node, so the instance's
/// file stem is unique in it).
pub fn container_name(stem: &str) -> String {
    format!("hf-{stem}")
}

/// What [`run_argv`] needs about one start.
pub struct RunRequest<'a> {
    pub image: &'a OciImage,
    pub name: &'a str,
    /// The command in the container (empty: the image's own).
    pub command: &'a [String],
    /// Environment variable names, passed by name (values from the client's environment).
    pub env_names: Vec<&'a str>,
    /// (host path, path in the container), mounted read-only: secret files.
    pub mounts: &'a [(String, String)],
    pub workdir: Option<&'a Path>,
    /// The instance's cgroup relative to the hierarchy root (`/holdfast-1/web-0`), when
    /// the agent has one: the container and conmon go below it.
    pub cgroup_parent: Option<&'a str>,
    /// Applied by podman itself when there is no instance cgroup.
    pub limits: &'a Limits,
    /// (name, soft, hard) resource limits for the container: the agent's own.
    pub ulimits: Vec<(&'static str, u64, u64)>,
}

/// The most processes a container's user may have (`nproc`): podman's default (4M)
/// needs CAP_SYS_RESOURCE to set, and some hosts refuse even the agent's own limit to a
/// container's init; 32768 is more than any service runs.
pub const CONTAINER_NPROC: u64 = 32_768;

/// Open-file and process limits for containers: the agent's own open files (a container
/// may not be given more than the process starting it may set), and at most
/// [`CONTAINER_NPROC`] processes.
pub fn own_ulimits() -> Vec<(&'static str, u64, u64)> {
    use rustix::process::{getrlimit, Resource};
    let nofile = getrlimit(Resource::Nofile);
    let nproc = getrlimit(Resource::Nproc);
    let cap = |v: Option<u64>| v.unwrap_or(CONTAINER_NPROC).min(CONTAINER_NPROC);
    let mut out = Vec::new();
    if let (Some(soft), Some(hard)) = (nofile.current, nofile.maximum) {
        out.push(("nofile", soft, hard));
    }
    out.push(("nproc", cap(nproc.current), cap(nproc.maximum)));
    out
}

/// `podman ... run ...` for one start of an instance.
pub fn run_argv(cfg: &OciConfig, r: &RunRequest<'_>) -> Vec<String> {
    let mut a = cfg.global();
    a.extend(
        [
            "run",
            "--rm",
            "--replace",
            "--name",
            r.name,
            "--network",
            "host",
            "--pull",
            "missing",
            "--init",
            "--log-driver",
            "none",
        ]
        .map(String::from),
    );
    // The client's own limits (podman's defaults may exceed what this process may set).
    for (name, soft, hard) in &r.ulimits {
        a.extend(["--ulimit".into(), format!("{name}={soft}:{hard}")]);
    }
    if r.image.insecure {
        a.push("--tls-verify=false".into());
    }
    match r.cgroup_parent {
        Some(p) => a.extend(["--cgroup-parent".into(), p.to_string()]),
        None => {
            if let Some(m) = r.limits.memory_bytes {
                a.extend(["--memory".into(), m.to_string()]);
            }
            if let Some(c) = r.limits.cpu_millis {
                a.extend(["--cpus".into(), format!("{}.{:03}", c / 1000, c % 1000)]);
            }
        }
    }
    if let Some(w) = r.workdir {
        a.extend(["--workdir".into(), w.display().to_string()]);
    }
    for name in &r.env_names {
        a.extend(["--env".into(), (*name).to_string()]);
    }
    for (host, inside) in r.mounts {
        a.extend(["--volume".into(), format!("{host}:{inside}:ro")]);
    }
    a.push(r.image.reference.clone());
    a.extend(r.command.iter().cloned());
    a
}

/// `podman ... exec NAME ARGV...`: an exec health check, run inside the container.
pub fn exec_argv(cfg: &OciConfig, name: &str, argv: &[String]) -> Vec<String> {
    let mut a = cfg.global();
    a.extend(["exec".to_string(), name.to_string()]);
    a.extend(argv.iter().cloned());
    a
}

/// `podman ... rm -f --time 0 NAME`: removes the container whatever its state.
pub fn remove_argv(cfg: &OciConfig, name: &str) -> Vec<String> {
    let mut a = cfg.global();
    a.extend(["rm", "--force", "--ignore", "--time", "0", name].map(String::from));
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> OciConfig {
        OciConfig {
            podman: "podman".into(),
            root: "/d/oci/storage".into(),
            runroot: "/d/oci/run".into(),
            runtime: Some("runc".into()),
        }
    }

    #[test]
    fn a_start_is_one_podman_run_with_the_instances_contract() {
        let image = OciImage { reference: "127.0.0.1:5000/demo/web:1".into(), insecure: true };
        let command = vec!["/bin/httpd".to_string(), "-f".to_string()];
        let mounts = vec![("/run/holdfast/a/web-0/key".to_string(), "/etc/web/key".to_string())];
        let limits = Limits { cpu_millis: Some(500), memory_bytes: Some(64 << 20) };
        let r = RunRequest {
            image: &image,
            name: "hf-web-0",
            command: &command,
            env_names: vec!["PORT", "TOKEN"],
            mounts: &mounts,
            workdir: None,
            cgroup_parent: Some("/holdfast-1/web-0"),
            limits: &limits,
            ulimits: vec![("nofile", 1024, 4096)],
        };
        assert_eq!(
            run_argv(&cfg(), &r).join(" "),
            "podman --root /d/oci/storage --runroot /d/oci/run --cgroup-manager cgroupfs --events-backend none \
             --runtime runc run --rm --replace --name hf-web-0 --network host --pull missing --init \
             --log-driver none --ulimit nofile=1024:4096 --tls-verify=false --cgroup-parent /holdfast-1/web-0 --env PORT --env TOKEN \
             --volume /run/holdfast/a/web-0/key:/etc/web/key:ro 127.0.0.1:5000/demo/web:1 /bin/httpd -f"
        );
        // No cgroup: podman's own limits; a registry over HTTPS: verified.
        let image = OciImage { reference: "docker.io/library/busybox:1.36".into(), insecure: false };
        let r = RunRequest {
            image: &image,
            command: &[],
            cgroup_parent: None,
            mounts: &[],
            env_names: vec![],
            ulimits: vec![],
            ..r
        };
        let a = run_argv(&cfg(), &r).join(" ");
        assert!(a.ends_with("--log-driver none --memory 67108864 --cpus 0.500 docker.io/library/busybox:1.36"), "{a}");
        assert_eq!(
            remove_argv(&cfg(), "hf-web-0").join(" "),
            "podman --root /d/oci/storage --runroot /d/oci/run --cgroup-manager cgroupfs --events-backend none \
             --runtime runc rm --force --ignore --time 0 hf-web-0"
        );
    }
}
