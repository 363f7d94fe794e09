//! The crate's only `unsafe`: the pre-exec hook of a workload child. Between
//! fork and exec it makes the child a session (and process group) leader,
//! joins the instance cgroups through `cgroup.procs` descriptors opened by
//! the parent before fork, and, for an instance with secret files, enters a
//! private mount namespace and bind-mounts its secret directories.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Installs the hook on `cmd`. `cgroup_procs` are open, writable
/// `cgroup.procs` files (close-on-exec, so the workload never sees them).
/// `mounts` are (source, target) directories, bound in a mount namespace of the child's
/// own, whose mounts do not propagate back to the host.
pub(crate) fn install(cmd: &mut Command, cgroup_procs: Vec<OwnedFd>, mounts: Vec<(CString, CString)>) {
    let hook = move || -> std::io::Result<()> {
        rustix::process::setsid().map_err(std::io::Error::from)?;
        for fd in &cgroup_procs {
            // "0" = the writing process: the child itself joins.
            rustix::io::write(fd, b"0").map_err(std::io::Error::from)?;
        }
        if !mounts.is_empty() {
            // SAFETY: unshare(2) of the mount namespace in the single-threaded child.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }
                .map_err(std::io::Error::from)?;
            use rustix::mount::MountPropagationFlags as P;
            rustix::mount::mount_change(c"/", P::DOWNSTREAM | P::REC).map_err(std::io::Error::from)?;
            for (source, target) in &mounts {
                rustix::mount::mount_bind(source.as_c_str(), target.as_c_str()).map_err(std::io::Error::from)?;
            }
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child of a possibly multi-threaded
    // parent, where only async-signal-safe operations are allowed. It only
    // issues the raw setsid(2) and write(2) syscalls (rustix, no libc locks)
    // on file descriptors that were opened in the parent before fork, and
    // builds errors with `io::Error::from(Errno)`, which does not allocate.
    // The mount namespace calls (unshare, mount) are raw syscalls too, on C
    // strings built in the parent. It touches no other memory than the
    // captured vectors, which are not mutated.
    unsafe {
        cmd.pre_exec(hook);
    }
}
