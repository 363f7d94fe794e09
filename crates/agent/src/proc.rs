//! Process-table helpers and exit detection: `/proc/<pid>/stat` parsing,
//! signalling pids and process groups, scanning a process group, and
//! `ExitWatcher`, which notices the exit of a pid whether or not it is our
//! child (pidfd + AsyncFd, falling back to polling).

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, Signal, WaitOptions};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// The fields of `/proc/<pid>/stat` the agent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub pid: u32,
    pub state: char,
    pub ppid: u32,
    pub pgid: u32,
    pub sid: u32,
    /// Field 22: start time in clock ticks after boot. With the pid it
    /// identifies a process across pid reuse.
    pub start_time: u64,
}

impl ProcStat {
    pub(crate) fn is_zombie(&self) -> bool {
        self.state == 'Z' || self.state == 'X'
    }
}

/// Parses the content of `/proc/<pid>/stat` (the command name may contain
/// spaces and parentheses: fields are counted after the last `)`).
pub(crate) fn parse_stat(s: &str) -> Option<ProcStat> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let pid = s[..open].trim().parse().ok()?;
    let rest: Vec<&str> = s.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); field N is rest[N - 3].
    Some(ProcStat {
        pid,
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        pgid: rest.get(2)?.parse().ok()?,
        sid: rest.get(3)?.parse().ok()?,
        start_time: rest.get(19)?.parse().ok()?,
    })
}

pub(crate) fn read_stat(pid: u32) -> Option<ProcStat> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&s)
}

/// True if `pid` exists, is not a zombie, and started at `start_time`.
pub(crate) fn is_alive(pid: u32, start_time: u64) -> bool {
    matches!(read_stat(pid), Some(st) if st.start_time == start_time && !st.is_zombie())
}

/// All live (non-zombie) processes on the machine.
pub(crate) fn all_processes() -> Vec<ProcStat> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter_map(read_stat)
        .filter(|st| !st.is_zombie())
        .collect()
}

/// A process's CPU time (utime + stime, fields 14 and 15, in clock ticks) and resident
/// pages (field 24), with its process group, from `/proc/<pid>/stat` content.
pub(crate) fn parse_usage(s: &str) -> Option<(u32, u64, u64)> {
    let close = s.rfind(')')?;
    let rest: Vec<&str> = s.get(close + 1..)?.split_whitespace().collect();
    let pgid = rest.get(2)?.parse().ok()?;
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    let rss: u64 = rest.get(21)?.parse().ok()?;
    Some((pgid, utime + stime, rss))
}

/// CPU time (ns) and resident memory (bytes) summed over each of `pgids`' live
/// processes, in one scan of `/proc`: the usage of instances without a cgroup.
pub(crate) fn group_usage(pgids: &[u32]) -> std::collections::BTreeMap<u32, (u64, u64)> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(rd) = std::fs::read_dir("/proc") else { return out };
    let ticks = rustix::param::clock_ticks_per_second().max(1);
    let page = rustix::param::page_size() as u64;
    for e in rd.filter_map(|e| e.ok()) {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some((pgid, cpu_ticks, rss_pages)) = parse_usage(&text) else { continue };
        if pgids.contains(&pgid) {
            let slot: &mut (u64, u64) = out.entry(pgid).or_default();
            slot.0 += cpu_ticks.saturating_mul(1_000_000_000) / ticks;
            slot.1 += rss_pages.saturating_mul(page);
        }
    }
    out
}

/// Live (non-zombie) pids whose process group is `pgid`.
pub(crate) fn group_members(pgid: u32) -> Vec<u32> {
    all_processes().into_iter().filter(|st| st.pgid == pgid).map(|st| st.pid).collect()
}

fn pid_of(raw: u32) -> io::Result<Pid> {
    i32::try_from(raw)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("invalid pid {raw}")))
}

fn signal_of(sig: i32) -> io::Result<Signal> {
    Signal::from_named_raw(sig)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("invalid signal {sig}")))
}

/// Sends `sig` to one process. A process that is already gone is not an error.
pub(crate) fn signal_pid(pid: u32, sig: i32) -> io::Result<()> {
    match rustix::process::kill_process(pid_of(pid)?, signal_of(sig)?) {
        Ok(()) | Err(Errno::SRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Sends `sig` to a whole process group. An empty group is not an error.
pub(crate) fn signal_group(pgid: u32, sig: i32) -> io::Result<()> {
    match rustix::process::kill_process_group(pid_of(pgid)?, signal_of(sig)?) {
        Ok(()) | Err(Errno::SRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `SIGTERM`-style name of a signal number.
pub(crate) fn signal_name(sig: i32) -> String {
    let name = match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        17 => "SIGCHLD",
        18 => "SIGCONT",
        19 => "SIGSTOP",
        20 => "SIGTSTP",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}

/// Registers an owned pidfd with the tokio reactor.
///
/// `AsyncFd::with_interest` is deprecated in favour of the `unsafe`
/// `register_with_interest`, whose safety condition is that the descriptor
/// stays open and is not replaced while registered. That holds trivially
/// here: the `AsyncFd` owns the `OwnedFd` and closes it only on drop, after
/// deregistering; nothing else has access to it. Using the safe, deprecated
/// constructor keeps this crate free of `unsafe` outside the pre-exec hook.
#[allow(deprecated)]
fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(io::Error::other("no tokio runtime"));
    }
    AsyncFd::with_interest(fd, Interest::READABLE)
}

/// How a watched process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitOutcome {
    Code(i32),
    Signal(i32),
    /// The process was not our child (re-adopted after the agent crashed):
    /// it is gone but its exit status went to its real parent.
    Unknown,
}

/// Waits for one process to exit and reaps it if it is our child.
///
/// Uses a pidfd registered with the tokio reactor when the kernel supports
/// it, otherwise polls every 200ms. Only ever calls `waitpid` on this exact
/// pid, never `waitpid(-1)`, so it does not steal other children's statuses.
pub(crate) struct ExitWatcher {
    pid: u32,
    start_time: u64,
    pidfd: Option<AsyncFd<OwnedFd>>,
    pidfd_fired: bool,
    /// `None` until the first waitpid told us.
    is_child: Option<bool>,
}

impl ExitWatcher {
    pub(crate) fn new(pid: u32, start_time: u64) -> Self {
        let pidfd = pid_of(pid)
            .ok()
            .and_then(|p| rustix::process::pidfd_open(p, PidfdFlags::empty()).ok())
            .and_then(|fd| register(fd).ok());
        // A process whose parent is someone else is never waitpid'ed: its
        // pid could later be reused by one of our own children.
        let me = std::process::id();
        let is_child = match read_stat(pid) {
            Some(st) if st.ppid != me => Some(false),
            _ => None,
        };
        Self { pid, start_time, pidfd, pidfd_fired: false, is_child }
    }

    /// Whether the process is (known to be) a child of this process.
    #[cfg(test)]
    pub(crate) fn is_child(&mut self) -> bool {
        if self.is_child.is_none() {
            let me = std::process::id();
            self.is_child = Some(read_stat(self.pid).is_some_and(|st| st.ppid == me));
        }
        self.is_child.unwrap_or(false)
    }

    /// Resolves when the process has exited (cancel safe).
    pub(crate) async fn wait(&mut self) -> ExitOutcome {
        loop {
            if let Some(o) = self.poll_once() {
                return o;
            }
            let pidfd_fired = self.pidfd_fired;
            match &self.pidfd {
                Some(fd) if !pidfd_fired => match fd.readable().await {
                    Ok(mut guard) => {
                        guard.retain_ready();
                        self.pidfd_fired = true;
                    }
                    Err(_) => {
                        self.pidfd = None;
                    }
                },
                // Fired but not yet reapable (should not happen), or no pidfd.
                Some(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                None => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Non-blocking check; reaps the child if it exited.
    pub(crate) fn poll_once(&mut self) -> Option<ExitOutcome> {
        if self.is_child != Some(false) {
            let pid = pid_of(self.pid).ok()?;
            match rustix::process::waitpid(Some(pid), WaitOptions::NOHANG) {
                Ok(Some((_, st))) => {
                    self.is_child = Some(true);
                    if let Some(code) = st.exit_status() {
                        return Some(ExitOutcome::Code(code));
                    }
                    if let Some(sig) = st.terminating_signal() {
                        return Some(ExitOutcome::Signal(sig));
                    }
                    return Some(ExitOutcome::Unknown);
                }
                Ok(None) => {
                    self.is_child = Some(true);
                    return None;
                }
                Err(Errno::INTR) => return None,
                Err(_) => self.is_child = Some(false),
            }
        }
        // Not our child: the pidfd firing, or the pid being gone/reused/a
        // zombie, means it exited.
        if self.pidfd_fired || !is_alive(self.pid, self.start_time) {
            return Some(ExitOutcome::Unknown);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_comm() {
        let s = "1234 (we ird) (x)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        let st = parse_stat(s).expect("parse");
        assert_eq!(st.pid, 1234);
        assert_eq!(st.state, 'S');
        assert_eq!(st.ppid, 1);
        assert_eq!(st.pgid, 1234);
        assert_eq!(st.sid, 1234);
        assert_eq!(st.start_time, 987654);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn parses_cpu_ticks_and_resident_pages() {
        // utime 1, stime 2 (fields 14, 15), rss 10 (field 24).
        let s = "1234 (we ird) (x)) S 1 77 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        assert_eq!(parse_usage(s), Some((77, 3, 10)));
        assert_eq!(parse_usage("1 (x) S"), None);
        let me = read_stat(std::process::id()).expect("own stat");
        let usage = group_usage(&[me.pgid]);
        let (_, rss) = usage.get(&me.pgid).copied().expect("own group");
        assert!(rss > 1 << 20, "resident bytes {rss}");
    }

    #[test]
    fn reads_own_stat() {
        let me = std::process::id();
        let st = read_stat(me).expect("own stat");
        assert_eq!(st.pid, me);
        assert!(is_alive(me, st.start_time));
        assert!(!is_alive(me, st.start_time + 1));
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(64), "signal 64");
    }

    #[tokio::test]
    async fn watcher_reaps_child_with_status() {
        let child = std::process::Command::new("sh").args(["-c", "exit 7"]).spawn().expect("spawn");
        let pid = child.id();
        let start = read_stat(pid).map(|s| s.start_time).unwrap_or(0);
        drop(child);
        let mut w = ExitWatcher::new(pid, start);
        let out = tokio::time::timeout(Duration::from_secs(10), w.wait()).await.expect("exit seen");
        assert_eq!(out, ExitOutcome::Code(7));
    }

    #[tokio::test]
    async fn watcher_sees_non_child_exit_as_unknown() {
        // A grandchild: `sh` backgrounds sleep, prints its pid and exits, so
        // the sleep is re-parented away from us.
        let out =
            std::process::Command::new("sh").args(["-c", "sleep 30 >/dev/null 2>&1 & echo $!"]).output().expect("run");
        let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("pid");
        let st = read_stat(pid).expect("grandchild alive");
        let mut w = ExitWatcher::new(pid, st.start_time);
        assert!(w.poll_once().is_none());
        assert!(!w.is_child());
        signal_pid(pid, 9).expect("kill");
        let out = tokio::time::timeout(Duration::from_secs(10), w.wait()).await.expect("exit seen");
        assert_eq!(out, ExitOutcome::Unknown);
    }
}
