//! How quantities and times read on the dashboard: bytes in binary units, CPU in
//! millicores, times in UTC. Pure.

/// `512 B`, `1.5 KiB`, `128 MiB`, `2.0 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else if value >= 100.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `250m`, `1500m` (Kubernetes style: thousandths of a core).
pub fn millicores(m: u64) -> String {
    format!("{m}m")
}

/// `2026-12-01 09:05:03` (UTC) for milliseconds since the Unix epoch.
pub fn utc(ms: u64) -> String {
    let t = holdfast_api::utc_timestamp(ms);
    format!("{} {}", t.get(..10).unwrap_or(""), t.get(11..19).unwrap_or(""))
}

/// `09:05:03` (UTC).
pub fn utc_time(ms: u64) -> String {
    let secs = ms / 1000 % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// `3s`, `4m`, `2h`, `5d` ago, from two times in ms.
pub fn ago(then_ms: u64, now_ms: u64) -> String {
    let s = now_ms.saturating_sub(then_ms) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_and_times_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(128 << 20), "128 MiB");
        assert_eq!(bytes(2 << 30), "2.0 GiB");
        assert_eq!(millicores(250), "250m");
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_709_210_096_000), "2024-02-29 12:34:56");
        assert_eq!(utc_time(1_709_210_096_999), "12:34:56");
        assert_eq!(ago(1_000, 61_000), "1m");
        assert_eq!(ago(5_000, 1_000), "0s");
    }
}
