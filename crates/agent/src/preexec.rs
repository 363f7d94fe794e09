//! The crate's only `unsafe`: the pre-exec hook of a workload child. Between
//! fork and exec it makes the child a session (and process group) leader and
//! joins the instance cgroups through `cgroup.procs` descriptors opened by
//! the parent before fork.
#![allow(unsafe_code)]

use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Installs the hook on `cmd`. `cgroup_procs` are open, writable
/// `cgroup.procs` files (close-on-exec, so the workload never sees them).
pub(crate) fn install(cmd: &mut Command, cgroup_procs: Vec<OwnedFd>) {
    let hook = move || -> std::io::Result<()> {
        rustix::process::setsid().map_err(std::io::Error::from)?;
        for fd in &cgroup_procs {
            // "0" = the writing process: the child itself joins.
            rustix::io::write(fd, b"0").map_err(std::io::Error::from)?;
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child of a possibly multi-threaded
    // parent, where only async-signal-safe operations are allowed. It only
    // issues the raw setsid(2) and write(2) syscalls (rustix, no libc locks)
    // on file descriptors that were opened in the parent before fork, and
    // builds errors with `io::Error::from(Errno)`, which does not allocate.
    // It touches no other memory than the captured descriptor vector, which
    // is not mutated.
    unsafe {
        cmd.pre_exec(hook);
    }
}
