//! Ports for test nodes that no other test process and no outgoing connection can take
//! between the moment a test picks them and the moment its node binds them.
//!
//! Asking the kernel for port 0 and releasing it races with every outgoing connection:
//! the kernel hands the same ephemeral ports out as source ports, so a node started a
//! moment later can find its port taken (`cannot listen for dns on 127.0.2.11:PORT`).
//! Ports here come from below the machine's ephemeral range and are reserved across test
//! processes with one file per port naming the reserving pid; a file whose pid is gone is
//! taken over.
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

/// The pool: below Linux's default ephemeral range (32768–60999) and below the instance
/// port ranges the scenario tests give their nodes (20000 and up).
const POOL: std::ops::Range<u16> = 10_000..20_000;

static NEXT: AtomicU32 = AtomicU32::new(0);

fn dir() -> PathBuf {
    std::env::temp_dir().join("holdfast-test-ports")
}

/// Reserves `port` for this process; false when a live process holds it.
fn reserve(port: u16) -> bool {
    let dir = dir();
    if std::fs::create_dir_all(&dir).is_err() {
        return true; // no reservations possible: the bind checks still apply
    }
    let path = dir.join(port.to_string());
    let me = std::process::id();
    for _ in 0..2 {
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => return f.write_all(me.to_string().as_bytes()).is_ok(),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let holder = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse::<u32>().ok());
                match holder {
                    Some(pid) if pid == me => return false, // this process already uses it
                    Some(pid) if crate::cluster::alive(pid) => return false,
                    // A stale reservation (or one being written right now: skip it then).
                    Some(_) => {
                        let _ = std::fs::remove_file(&path);
                    }
                    None => return false,
                }
            }
            Err(_) => return true,
        }
    }
    false
}

/// A reserved port, free for TCP (and UDP when `udp`) on 127.0.0.1 right now.
fn pick(udp: bool) -> u16 {
    let span = u32::from(POOL.end - POOL.start);
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = POOL.start + offset as u16;
        let tcp_free = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        let udp_free = !udp || std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if tcp_free && udp_free && reserve(port) {
            return port;
        }
    }
    panic!("no free port left in {POOL:?}");
}

/// A free TCP port, reserved for this test process.
pub fn free_port() -> u16 {
    pick(false)
}

/// A free UDP and TCP port, reserved for this test process.
pub fn free_udp_port() -> u16 {
    pick(true)
}
