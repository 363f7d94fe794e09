//! Running the external tools the testbed drives (`ip`, `nft`, `iptables`): finding them
//! (with an error naming the missing tool and its package) and running them with failures
//! turned into [`TestbedError::Command`].

use std::ffi::OsStr;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::error::{Result, TestbedError};

/// A program the testbed calls, with the Debian package that ships it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tool {
    pub name: &'static str,
    pub package: &'static str,
}

pub(crate) const IP: Tool = Tool { name: "ip", package: "iproute2" };
pub(crate) const NFT: Tool = Tool { name: "nft", package: "nftables" };
pub(crate) const IPTABLES: Tool = Tool { name: "iptables", package: "iptables" };

/// Finds `tool` in `PATH`, plus the sbin directories a non-root `PATH` often lacks.
pub(crate) fn find(tool: Tool) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .map(|dir| dir.join(tool.name))
        .find(|candidate| is_executable(candidate))
        .ok_or(TestbedError::ToolMissing { tool: tool.name, package: tool.package })
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// Runs `tool args...`, feeding `stdin` if given; returns stdout on success.
pub(crate) fn run<S: AsRef<OsStr>>(tool: Tool, args: &[S], stdin: Option<&str>) -> Result<String> {
    let program = find(tool)?;
    run_program(&program, args, stdin)
}

/// Runs `tool args...` inside network namespace `netns` (`ip netns exec`).
pub(crate) fn run_in_netns<S: AsRef<OsStr>>(
    netns: &str,
    tool: Tool,
    args: &[S],
    stdin: Option<&str>,
) -> Result<String> {
    let ip = find(IP)?;
    let program = find(tool)?;
    let mut full: Vec<&OsStr> = vec![OsStr::new("netns"), OsStr::new("exec"), OsStr::new(netns), program.as_os_str()];
    full.extend(args.iter().map(|a| a.as_ref()));
    run_program(&ip, &full, stdin)
}

fn run_program<S: AsRef<OsStr>>(program: &std::path::Path, args: &[S], stdin: Option<&str>) -> Result<String> {
    let describe = || {
        let mut s = program.display().to_string();
        for a in args {
            s.push(' ');
            s.push_str(&a.as_ref().to_string_lossy());
        }
        s
    };
    let mut command = Command::new(program);
    command.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = command.spawn().map_err(|e| TestbedError::io(format!("spawning `{}`", describe()), e))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A write error shows up as the command's own failure below.
        let _ = pipe.write_all(input.as_bytes());
    }
    let output = child.wait_with_output().map_err(|e| TestbedError::io(format!("waiting for `{}`", describe()), e))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        let mut command = describe();
        if let Some(input) = stdin {
            command.push_str(" <<< ");
            command.push_str(input.trim());
        }
        Err(TestbedError::Command {
            command,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}
