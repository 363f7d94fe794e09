//! Added latency between sites without `tc netem` (not in this kernel): in every node
//! namespace an iptables rule sends packets bound for the other sites' nodes to NFQUEUE 0
//! (`--queue-bypass`: with nobody listening they pass untouched), and a delayer thread that
//! lives in that namespace holds each packet for the delay before accepting it. A delay D per
//! direction gives a round trip of about 2·D between sites; traffic within a site is not
//! touched. Dropping the [`LatencyGuard`] removes the rules and releases every held packet.

use std::collections::VecDeque;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cmd::{self, Tool, IPTABLES};
use crate::error::{Result, TestbedError};
use crate::netns::netns_path;

const IPTABLES_RESTORE: Tool = Tool { name: "iptables-restore", package: "iptables" };
const CHAIN: &str = "HOLDFAST_LATENCY";
const QUEUE: u16 = 0;

/// The delayers of one testbed (one thread per node namespace).
#[derive(Debug)]
pub(crate) struct Delayers {
    delay: Duration,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// (namespace, destinations delayed from it) for every node that has rules.
    rules: Vec<(String, Vec<Ipv4Addr>)>,
    rules_removed: AtomicBool,
}

impl Delayers {
    /// Starts one delayer per entry of `nodes` (namespace, destinations), then installs the
    /// rules. Everything started is undone on error.
    pub(crate) fn start(nodes: Vec<(String, Vec<Ipv4Addr>)>, delay: Duration) -> Result<Arc<Delayers>> {
        cmd::find(IPTABLES)?;
        cmd::find(IPTABLES_RESTORE)?;
        let nodes: Vec<_> = nodes.into_iter().filter(|(_, dests)| !dests.is_empty()).collect();
        let delayers = Arc::new(Delayers {
            delay,
            stop: Arc::new(AtomicBool::new(false)),
            threads: Mutex::new(Vec::new()),
            rules: nodes.clone(),
            rules_removed: AtomicBool::new(true),
        });
        let (ready_tx, ready_rx) = mpsc::channel();
        for (netns, _) in &nodes {
            let (path, stop, ready) = (netns_path(netns), delayers.stop.clone(), ready_tx.clone());
            let name = format!("hft-delay-{netns}");
            let handle = std::thread::Builder::new()
                .name(name)
                .spawn(move || delayer(path, delay, stop, ready))
                .map_err(|e| TestbedError::io("spawning a delayer thread", e));
            match handle {
                Ok(h) => lock(&delayers.threads).push(h),
                Err(e) => {
                    delayers.stop(false);
                    return Err(e);
                }
            }
        }
        drop(ready_tx);
        for _ in &nodes {
            let outcome = ready_rx.recv_timeout(Duration::from_secs(5)).unwrap_or_else(|_| {
                Err(TestbedError::Timeout {
                    what: "a delayer thread to bind its queue".into(),
                    after: Duration::from_secs(5),
                })
            });
            if let Err(e) = outcome {
                delayers.stop(false);
                return Err(e);
            }
        }
        delayers.rules_removed.store(false, Ordering::SeqCst);
        for (netns, dests) in &nodes {
            let list: Vec<String> = dests.iter().map(|a| format!("{a}/32")).collect();
            let script = format!(
                "*filter\n:{CHAIN} - [0:0]\n-A {CHAIN} -d {} -j NFQUEUE --queue-num {QUEUE} --queue-bypass\n-I OUTPUT -j {CHAIN}\nCOMMIT\n",
                list.join(",")
            );
            if let Err(e) = cmd::run_in_netns(netns, IPTABLES_RESTORE, &["--noflush"], Some(&script)) {
                delayers.stop(true);
                return Err(e);
            }
        }
        Ok(delayers)
    }

    /// Removes the rules (if `remove_rules`: skip it when the namespaces are about to go
    /// anyway), stops the threads, which accept every packet they still hold. Idempotent.
    pub(crate) fn stop(&self, remove_rules: bool) {
        if !self.rules_removed.swap(true, Ordering::SeqCst) && remove_rules {
            let script = format!("*filter\n-D OUTPUT -j {CHAIN}\n-F {CHAIN}\n-X {CHAIN}\nCOMMIT\n");
            for (netns, _) in &self.rules {
                if let Err(e) = cmd::run_in_netns(netns, IPTABLES_RESTORE, &["--noflush"], Some(&script)) {
                    eprintln!("holdfast-testbed: removing latency rules in {netns}: {e}");
                }
            }
        }
        self.stop.store(true, Ordering::SeqCst);
        let threads = std::mem::take(&mut *lock(&self.threads));
        for t in threads {
            let _ = t.join();
        }
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The body of one delayer thread: enter the namespace, bind the queue, then hold every
/// packet for `delay` (FIFO: the delay is constant, so order is kept) until `stop`.
fn delayer(netns: PathBuf, delay: Duration, stop: Arc<AtomicBool>, ready: mpsc::Sender<Result<()>>) {
    let setup = || -> std::io::Result<nfq::Queue> {
        let file = File::open(&netns)?;
        rustix::thread::move_into_link_name_space(file.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))?;
        let mut queue = nfq::Queue::open()?;
        queue.bind(QUEUE)?;
        queue.set_fail_open(QUEUE, true)?;
        queue.set_copy_range(QUEUE, 0)?;
        queue.set_nonblocking(true);
        Ok(queue)
    };
    let mut queue = match setup() {
        Ok(q) => {
            let _ = ready.send(Ok(()));
            q
        }
        Err(e) => {
            let _ = ready.send(Err(TestbedError::io(format!("binding NFQUEUE in {}", netns.display()), e)));
            return;
        }
    };
    drop(ready);
    let mut held: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
    while !stop.load(Ordering::SeqCst) {
        loop {
            match queue.recv() {
                Ok(msg) => held.push_back((Instant::now() + delay, msg)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("holdfast-testbed: delayer in {}: {e}", netns.display());
                    break;
                }
            }
        }
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, mut msg)) = held.pop_front() {
                msg.set_verdict(nfq::Verdict::Accept);
                let _ = queue.verdict(msg);
            }
        }
        // Poll every millisecond: the queue socket cannot be waited on together with a
        // deadline, and a coarser tick would add to the delay.
        let nap = held.front().map_or(Duration::from_millis(1), |(due, _)| due.saturating_duration_since(now));
        std::thread::sleep(nap.min(Duration::from_millis(1)));
    }
    for (_, mut msg) in held.drain(..) {
        msg.set_verdict(nfq::Verdict::Accept);
        let _ = queue.verdict(msg);
    }
    let _ = queue.unbind(QUEUE);
}

/// Added latency between sites, in force while this guard lives (see
/// [`crate::Testbed::latency_between_sites`]). Dropping it removes the delay.
#[derive(Debug)]
pub struct LatencyGuard {
    pub(crate) delayers: Arc<Delayers>,
}

impl LatencyGuard {
    /// The delay added in each direction (a round trip between sites gains twice this).
    pub fn delay(&self) -> Duration {
        self.delayers.delay
    }
}

impl Drop for LatencyGuard {
    fn drop(&mut self) {
        self.delayers.stop(true);
    }
}
