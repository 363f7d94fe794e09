//! Patched (holdfast): a default histogram must not pay for the tables of the other
//! widths. Upstream 0.2.3 built all 16 widths on the first `Histogram::new()`, which
//! raised the resident set by about 26 MB. This is its own test binary, so no other
//! test has built any scale before it measures.

/// Resident set of this process in bytes (`VmRSS` of /proc/self/status).
#[cfg(target_os = "linux")]
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line");
    kb * 1024
}

#[cfg(target_os = "linux")]
#[test]
fn default_histogram_does_not_build_every_width() {
    let before = rss_bytes();
    let mut hist = base2histogram::Histogram::<()>::new();
    for v in 0..10_000u64 {
        hist.record(v * 37);
    }
    assert_eq!(hist.total(), 10_000);
    assert!(hist.percentile(0.5) > 0);
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < 4 << 20, "resident set grew by {grown} bytes for one width-3 histogram");
}
