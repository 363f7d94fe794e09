//! Name rules of the spec language: DNS labels (project, service and port
//! names), environment variable names, route host names, and node label keys
//! and values, with messages that say what a valid name looks like.

/// Longest DNS label.
pub const MAX_LABEL_LEN: usize = 63;
/// Longest host name.
pub const MAX_HOST_LEN: usize = 253;

/// True for a DNS label as used for project, service and port names:
/// 1–63 characters of `a-z`, `0-9`, `-`, starting with a letter and not
/// ending with `-`.
pub fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            bytes.len() <= MAX_LABEL_LEN
                && first.is_ascii_lowercase()
                && *last != b'-'
                && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        }
        _ => false,
    }
}

/// True for an environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => chars.all(|c| c.is_ascii_alphanumeric() || c == '_'),
        _ => false,
    }
}

/// True for a lowercase host name label: `a-z0-9-`, 1–63 characters, not
/// starting or ending with `-`.
fn is_host_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            bytes.len() <= MAX_LABEL_LEN
                && *first != b'-'
                && *last != b'-'
                && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        }
        _ => false,
    }
}

/// True for a route host: lowercase dot-separated labels, at most 253
/// characters, optionally starting with a `*.` wildcard.
pub fn is_valid_host(s: &str) -> bool {
    let rest = s.strip_prefix("*.").unwrap_or(s);
    !rest.is_empty() && s.len() <= MAX_HOST_LEN && rest.split('.').all(is_host_label)
}

/// Lowercases a host and drops one trailing dot, as the spec does before
/// validating it.
pub fn normalise_host(s: &str) -> String {
    let lower = s.trim().to_ascii_lowercase();
    match lower.strip_suffix('.') {
        Some(stripped) if !stripped.is_empty() => stripped.to_string(),
        _ => lower,
    }
}

/// A DNS label close to `s` (lowercased, other characters turned into
/// `-`), if that is valid.
fn label_fix(s: &str) -> Option<String> {
    let mut out = String::new();
    for c in s.trim().chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches('-').to_string();
    (is_dns_label(&out) && out != s).then_some(out)
}

/// Why `s` is not a DNS label, for a `what` (e.g. "service name").
pub(crate) fn dns_label_problem(what: &str, s: &str) -> Option<String> {
    if is_dns_label(s) {
        return None;
    }
    let fix = match label_fix(s) {
        Some(f) => format!(", e.g. `{f}`"),
        None => String::new(),
    };
    let why = if s.is_empty() {
        "it is empty; ".to_string()
    } else if s.len() > MAX_LABEL_LEN {
        format!("it is {} characters long; ", s.len())
    } else {
        String::new()
    };
    Some(format!(
        "invalid {what} `{}`: {why}use 1-63 lowercase letters, digits and '-', starting with a letter and not ending with '-'{fix}",
        s.escape_debug()
    ))
}

/// Why `s` is not an environment variable name.
pub(crate) fn env_name_problem(s: &str) -> Option<String> {
    if is_env_name(s) {
        return None;
    }
    let fixed: String = s.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let fix = if is_env_name(&fixed) && fixed != s {
        format!(", e.g. `{}`", fixed.to_ascii_uppercase())
    } else {
        String::new()
    };
    Some(format!(
        "invalid environment variable name `{}`: use letters, digits and '_', not starting with a digit{fix}",
        s.escape_debug()
    ))
}

/// Why `s` is not a valid (normalised) route host.
pub(crate) fn host_problem(s: &str) -> Option<String> {
    domain_problem("host", "`demo.localhost`, `*.example.com`", s)
}

/// Why `s` is not a valid (normalised) host, for a `what` (`host`, `zone name`) whose
/// valid forms are `examples`.
pub(crate) fn domain_problem(what: &str, examples: &str, s: &str) -> Option<String> {
    if is_valid_host(s) {
        return None;
    }
    if s.is_empty() {
        return Some(format!(
            "{what} is empty; a {what} is dot-separated labels of lowercase letters, digits and '-' (e.g. {examples})"
        ));
    }
    let shown = s.escape_debug();
    let noun = if what == "host" { "host name" } else { what };
    let hint = if s.contains("://") {
        format!(": write only the {noun}, without a scheme such as `http://`")
    } else if s.contains('/') && what == "host" {
        ": write only the host name; put the path in the route's `path:`".to_string()
    } else if s.contains('/') {
        format!(": write only the {noun}, without a path")
    } else if s.contains(':') {
        format!(": write only the {noun}, without a port")
    } else if s.chars().any(|c| c.is_ascii_uppercase()) {
        format!(": {noun}s must be lowercase")
    } else if s.contains('*') {
        ": a wildcard is only allowed as a whole first label, as in `*.example.com`".to_string()
    } else if s.len() > MAX_HOST_LEN {
        format!(": it is longer than {MAX_HOST_LEN} characters")
    } else {
        String::new()
    };
    Some(format!(
        "invalid {what} `{shown}`{hint}; a {what} is dot-separated labels of lowercase letters, digits and '-' (e.g. {examples})"
    ))
}

/// Longest node label key or value.
pub const MAX_NODE_LABEL_LEN: usize = 63;

/// True for a node label key: 1–63 characters of `a-z`, `0-9`, `-`, `_`, `.`,
/// starting with a letter and ending with a letter or digit (e.g. `gpu`,
/// `disk-type`, `rack.row`).
pub fn is_label_key(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            bytes.len() <= MAX_NODE_LABEL_LEN
                && first.is_ascii_lowercase()
                && (last.is_ascii_lowercase() || last.is_ascii_digit())
                && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// True for a node label value: 1–63 characters of letters, digits, `-`, `_`,
/// `.`, starting and ending with a letter or digit (e.g. `true`, `arm64`,
/// `Xeon-E5`, `1.10`).
pub fn is_label_value(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            bytes.len() <= MAX_NODE_LABEL_LEN
                && first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// Why `key` is not a node label key.
pub fn label_key_problem(key: &str) -> Option<String> {
    if is_label_key(key) {
        return None;
    }
    let fixed: String = key
        .trim()
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.') { c } else { '-' })
        .collect();
    let fixed = fixed.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string();
    let fix = if is_label_key(&fixed) && fixed != key { format!(", e.g. `{fixed}`") } else { String::new() };
    let why = if key.is_empty() {
        "it is empty; ".to_string()
    } else if key.len() > MAX_NODE_LABEL_LEN {
        format!("it is {} characters long; ", key.len())
    } else {
        String::new()
    };
    Some(format!(
        "invalid label key `{}`: {why}use 1-63 lowercase letters, digits, '-', '_' and '.', starting with a letter and ending with a letter or digit{fix}",
        key.escape_debug()
    ))
}

/// Why `value` is not a valid value for node label `key`.
pub fn label_value_problem(key: &str, value: &str) -> Option<String> {
    if is_label_value(value) {
        return None;
    }
    let why = if value.is_empty() {
        "it is empty; ".to_string()
    } else if value.len() > MAX_NODE_LABEL_LEN {
        format!("it is {} characters long; ", value.len())
    } else {
        String::new()
    };
    Some(format!(
        "invalid value `{}` for label `{}`: {why}use 1-63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
        value.escape_debug(),
        key.escape_debug()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for ok in ["a", "web", "web-1", "a1b2", &"a".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "1web", "-web", "web-", "Web", "we_b", "we.b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }

    #[test]
    fn env_names() {
        for ok in ["A", "_X", "GREETING", "a_b_1"] {
            assert!(is_env_name(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "É"] {
            assert!(!is_env_name(bad), "{bad}");
        }
    }

    #[test]
    fn hosts() {
        for ok in ["localhost", "demo.localhost", "*.example.com", "a-1.b.c", "1.2.3.4"] {
            assert!(is_valid_host(ok), "{ok}");
        }
        for bad in ["", "*.", "*", "a..b", "-a.b", "a-.b", "A.b", "a.*.b", "a:80", "a/b", "a_b.c"] {
            assert!(!is_valid_host(bad), "{bad}");
        }
        assert_eq!(normalise_host("Demo.LocalHost."), "demo.localhost");
    }

    #[test]
    fn node_labels() {
        for ok in ["gpu", "disk-type", "rack.row", "zone_1", "a", &"a".repeat(63)] {
            assert!(is_label_key(ok), "{ok}");
        }
        for bad in ["", "GPU", "1gpu", "gpu-", "gp u", "gpu=x", "é", &"a".repeat(64)] {
            assert!(!is_label_key(bad), "{bad}");
        }
        for ok in ["true", "arm64", "Xeon-E5", "1.10", "a_b", "0"] {
            assert!(is_label_value(ok), "{ok}");
        }
        for bad in ["", "-x", "x.", "a b", "a/b", &"a".repeat(64)] {
            assert!(!is_label_value(bad), "{bad}");
        }
        assert_eq!(
            label_key_problem("GPU Type").as_deref(),
            Some("invalid label key `GPU Type`: use 1-63 lowercase letters, digits, '-', '_' and '.', starting with a letter and ending with a letter or digit, e.g. `gpu-type`")
        );
        assert_eq!(
            label_value_problem("gpu", "").as_deref(),
            Some("invalid value `` for label `gpu`: it is empty; use 1-63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit")
        );
    }

    #[test]
    fn label_fixes() {
        assert_eq!(label_fix("Web_1").as_deref(), Some("web-1"));
        assert_eq!(label_fix("web").as_deref(), None);
        assert_eq!(label_fix("123").as_deref(), None);
    }
}
