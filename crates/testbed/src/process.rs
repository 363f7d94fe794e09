//! Processes on nodes: [`NodeProcess`] (a process spawned with [`crate::Testbed::spawn`],
//! in its own process group, killed and reaped when dropped), signal helpers, and running
//! client commands with a time bound.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use crate::error::{Result, TestbedError};

/// Sends `signal` to one process; errors (already gone) are ignored.
pub(crate) fn signal_pid(pid: u32, signal: Signal) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// Sends `signal` to a process group; errors (already gone) are ignored.
pub(crate) fn signal_group(pgid: u32, signal: Signal) {
    if let Some(pid) = i32::try_from(pgid).ok().and_then(Pid::from_raw) {
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

/// What the testbed remembers of a spawned process, for process-group fallbacks of
/// kill/freeze when there is no cgroup. `live` turns false once the process is reaped, after
/// which its pid (= process group id) may be reused and must not be signalled.
#[derive(Debug, Clone)]
pub(crate) struct ProcRecord {
    pub node: usize,
    pub pgid: u32,
    pub live: Arc<AtomicBool>,
}

impl ProcRecord {
    pub(crate) fn signal(&self, signal: Signal) {
        if self.live.load(Ordering::SeqCst) {
            signal_group(self.pgid, signal);
        }
    }
}

/// A process running on a node (see [`crate::Testbed::spawn`]). It leads its own process
/// group. Dropping it SIGKILLs that group and reaps the process (bounded wait).
#[derive(Debug)]
pub struct NodeProcess {
    child: Child,
    node: usize,
    live: Arc<AtomicBool>,
    status: Option<ExitStatus>,
}

impl NodeProcess {
    pub(crate) fn new(child: Child, node: usize, live: Arc<AtomicBool>) -> Self {
        NodeProcess { child, node, live, status: None }
    }

    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The index of the node it runs on.
    pub fn node(&self) -> usize {
        self.node
    }

    /// Its exit status if it has exited (reaping it), `None` while it runs (or is frozen).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            let status = self.child.try_wait().map_err(|e| TestbedError::io("waiting for a node process", e))?;
            if let Some(status) = status {
                self.reaped(status);
            }
        }
        Ok(self.status)
    }

    /// Whether it is still running (a frozen process counts as running).
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    /// Waits at most `bound` for it to exit; `None` if it is still running then.
    pub fn wait_timeout(&mut self, bound: Duration) -> Result<Option<ExitStatus>> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if start.elapsed() >= bound {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILLs its process group and reaps it (waits at most 5 s).
    pub fn kill(&mut self) -> Result<Option<ExitStatus>> {
        if self.try_wait()?.is_none() {
            // The unreaped leader keeps its pid, so the group id cannot have been reused.
            signal_group(self.pid(), Signal::KILL);
        }
        self.wait_timeout(Duration::from_secs(5))
    }

    fn reaped(&mut self, status: ExitStatus) {
        self.status = Some(status);
        self.live.store(false, Ordering::SeqCst);
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Runs `command` to completion with stdout/stderr captured, SIGKILLing its process group
/// if it takes longer than `bound`.
pub(crate) fn output_within(mut command: Command, what: &str, bound: Duration) -> Result<Output> {
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let mut child = command.spawn().map_err(|e| TestbedError::io(format!("spawning {what}"), e))?;
    let readers = [child.stdout.take().map(drain), child.stderr.take().map(drain)];
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() >= bound => {
                signal_group(child.id(), Signal::KILL);
                let _ = child.wait();
                return Err(TestbedError::Timeout { what: what.to_string(), after: bound });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(TestbedError::io(format!("waiting for {what}"), e)),
        }
    };
    // A background grandchild may still hold the pipes open: give it a moment, then kill
    // the group so the readers see end-of-file.
    let collect = |rx: Option<mpsc::Receiver<Vec<u8>>>| {
        let rx = rx?;
        rx.recv_timeout(Duration::from_secs(2)).ok().or_else(|| {
            signal_group(child.id(), Signal::KILL);
            rx.recv_timeout(Duration::from_secs(2)).ok()
        })
    };
    let [stdout, stderr] = readers;
    let stdout = collect(stdout).unwrap_or_default();
    let stderr = collect(stderr).unwrap_or_default();
    Ok(Output { status, stdout, stderr })
}

fn drain<R: Read + Send + 'static>(mut pipe: R) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}
