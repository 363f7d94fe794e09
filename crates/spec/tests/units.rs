//! Unit parsing and formatting tables, plus property tests that formatting
//! and parsing round-trip.

use holdfast_spec::{
    format_bytes, format_cpu_millis, format_duration_ms, parse_cpu_millis, parse_duration_ms, parse_memory_bytes,
};
use proptest::prelude::*;

#[test]
fn durations() {
    for (text, ms) in [
        ("0", 0),
        ("0s", 0),
        ("500ms", 500),
        ("2s", 2_000),
        ("1.5s", 1_500),
        ("1m", 60_000),
        ("1h", 3_600_000),
        ("1m30s", 90_000),
        ("1h2m3s4ms", 3_723_004),
        ("5", 5_000),
        ("0.25", 250),
        (" 2s ", 2_000),
    ] {
        assert_eq!(parse_duration_ms(text), Ok(ms), "{text}");
    }
    for bad in ["", "s", "2 s", "2sec", "-1s", "1d", "1.5ms", "0.0001s", "1e3", "ms500", "99999999999999999999h"] {
        assert!(parse_duration_ms(bad).is_err(), "{bad}");
    }
}

#[test]
fn duration_formatting() {
    for (ms, text) in [
        (0, "0s"),
        (500, "500ms"),
        (1_000, "1s"),
        (1_500, "1s500ms"),
        (90_000, "1m30s"),
        (3_600_000, "1h"),
        (3_661_001, "1h1m1s1ms"),
    ] {
        assert_eq!(format_duration_ms(ms), text);
    }
}

#[test]
fn memory() {
    for (text, bytes) in [
        ("256Mi", 256 << 20),
        ("1Gi", 1 << 30),
        ("1.5Gi", 3 << 29),
        ("2Ki", 2048),
        ("1Ti", 1 << 40),
        ("1G", 1_000_000_000),
        ("500M", 500_000_000),
        ("1K", 1_000),
        ("1k", 1_000),
        ("2T", 2_000_000_000_000),
        ("1024", 1024),
        ("0.5K", 500),
    ] {
        assert_eq!(parse_memory_bytes(text), Ok(bytes), "{text}");
    }
    for bad in ["", "256MB", "1GB", "1mi", "Mi", "1.5", "-1Mi", "1 Gi", "99999999Ti"] {
        assert!(parse_memory_bytes(bad).is_err(), "{bad}");
    }
    assert_eq!(
        parse_memory_bytes("512MB").map_err(|e| e.to_string()),
        Err("invalid memory quantity `512MB`: use a number with Ki, Mi, Gi, Ti (binary) or K, M, G, T (decimal), e.g. `512Mi`".to_string())
    );
}

#[test]
fn memory_formatting() {
    for (bytes, text) in [
        (0, "0"),
        (256 << 20, "256Mi"),
        (1 << 30, "1Gi"),
        (1_000_000_000, "1G"),
        (1536, "1536"),
        (1500, "1500"),
        (1000, "1K"),
        (3 << 29, "1536Mi"),
        (1023, "1023"),
    ] {
        assert_eq!(format_bytes(bytes), text, "{bytes}");
    }
}

#[test]
fn cpu() {
    for (text, millis) in
        [("0.5", 500), ("500m", 500), ("2", 2_000), ("1.25", 1_250), ("0.001", 1), ("1m", 1), ("16", 16_000)]
    {
        assert_eq!(parse_cpu_millis(text), Ok(millis), "{text}");
    }
    for bad in ["", "m", "0.0001", "1.5m", "-1", "half", "1 core", "9999999999"] {
        assert!(parse_cpu_millis(bad).is_err(), "{bad}");
    }
    assert_eq!(format_cpu_millis(500), "500m");
    assert_eq!(format_cpu_millis(2_000), "2");
    assert_eq!(format_cpu_millis(1_500), "1500m");
}

proptest! {
    #[test]
    fn duration_format_round_trips(ms in any::<u64>()) {
        prop_assert_eq!(parse_duration_ms(&format_duration_ms(ms)), Ok(ms));
    }

    #[test]
    fn bytes_format_round_trips(bytes in any::<u64>()) {
        prop_assert_eq!(parse_memory_bytes(&format_bytes(bytes)), Ok(bytes));
    }

    #[test]
    fn cpu_format_round_trips(millis in any::<u32>()) {
        prop_assert_eq!(parse_cpu_millis(&format_cpu_millis(millis)), Ok(millis));
    }

    #[test]
    fn unit_parsers_never_panic(s in "\\PC{0,24}") {
        let _ = parse_duration_ms(&s);
        let _ = parse_memory_bytes(&s);
        let _ = parse_cpu_millis(&s);
    }

    #[test]
    fn spec_parser_never_panics(s in "[a-z:{}\\[\\],\\- \\n0-9\"'&*!|>#]{0,80}") {
        let _ = holdfast_spec::parse_str("fuzz.yaml", &s);
    }
}
