//! Shared helpers for the spec tests: dedenting inline YAML and asserting
//! on diagnostics.
#![allow(dead_code)]

use holdfast_spec::{parse_str, Stack};

/// Strips the leading newline and the common indentation of `s`, so YAML
/// can be written indented inside a test.
pub fn dedent(s: &str) -> String {
    let s = s.strip_prefix('\n').unwrap_or(s);
    let indent = s.lines().filter(|l| !l.trim().is_empty()).map(|l| l.len() - l.trim_start().len()).min().unwrap_or(0);
    let mut out = String::new();
    for line in s.lines() {
        out.push_str(line.get(indent..).unwrap_or(""));
        out.push('\n');
    }
    out
}

/// Every diagnostic for `yaml` (parsed as `demo.yaml`), one string each.
pub fn errors(yaml: &str) -> Vec<String> {
    match parse_str("demo.yaml", &dedent(yaml)) {
        Ok(stack) => panic!("expected errors, got a valid stack: {stack:#?}"),
        Err(e) => e.errors().iter().map(|e| e.to_string()).collect(),
    }
}

/// Asserts that some diagnostic for `yaml` equals or contains `expected`.
pub fn check_err(yaml: &str, expected: &str) {
    let errs = errors(yaml);
    assert!(
        errs.iter().any(|e| e.contains(expected)),
        "expected a diagnostic containing\n  {expected}\ngot:\n  {}",
        errs.join("\n  ")
    );
}

/// Asserts that `yaml` yields exactly `expected` (all diagnostics, in order).
pub fn check_errs_exactly(yaml: &str, expected: &[&str]) {
    let errs = errors(yaml);
    assert_eq!(errs, expected, "\ngot:\n  {}", errs.join("\n  "));
}

/// Parses `yaml`, panicking with the diagnostics if it is invalid.
pub fn check_ok(yaml: &str) -> Stack {
    match parse_str("demo.yaml", &dedent(yaml)) {
        Ok(stack) => {
            assert_eq!(stack.validate(), Ok(()), "a parsed stack must re-validate");
            stack
        }
        Err(e) => panic!("expected a valid spec, got:\n{e}"),
    }
}
