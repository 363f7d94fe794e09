//! OCI image references (`image:` of a service): parsed by the distribution grammar
//! (`[registry[:port]/]path[:tag][@sha256:hex]`) and written back fully qualified, the
//! way Docker resolves short names (`busybox` is `docker.io/library/busybox:latest`),
//! so every node pulls exactly the same thing and no runtime guesses a registry.

use std::fmt;

/// A parsed, fully qualified image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `docker.io`, `registry.example.com`, `127.0.0.1:5000`, `localhost:5000`.
    pub registry: String,
    /// `library/busybox`, `shop/web`.
    pub repository: String,
    /// `latest` when neither a tag nor a digest is given.
    pub tag: Option<String>,
    /// `sha256:<64 hex>`.
    pub digest: Option<String>,
}

/// The registry of references without one.
pub const DEFAULT_REGISTRY: &str = "docker.io";

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl ImageRef {
    /// Whether the registry is on this machine's loopback (`localhost`, `127.x`, `[::1]`):
    /// plain HTTP is allowed there only, as Docker does, unless the cluster lists the
    /// registry as insecure.
    pub fn registry_is_loopback(&self) -> bool {
        let host = match self.registry.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or(""),
            None => self.registry.split(':').next().unwrap_or(""),
        };
        host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

/// One path component: lowercase letters and digits, separated by `.`, `_`, `__` or `-`s.
fn component_ok(c: &str) -> bool {
    let mut sep = String::new();
    let mut seen_alnum = false;
    for ch in c.chars() {
        if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
            if !sep.is_empty() {
                let ok = sep == "." || sep == "_" || sep == "__" || sep.chars().all(|x| x == '-');
                if !ok || !seen_alnum {
                    return false;
                }
                sep.clear();
            }
            seen_alnum = true;
        } else if matches!(ch, '.' | '_' | '-') {
            sep.push(ch);
        } else {
            return false;
        }
    }
    seen_alnum && sep.is_empty()
}

fn registry_ok(r: &str) -> bool {
    let (host, port) = match r.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => return false,
        },
        None => match r.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (r, None),
        },
    };
    let host_ok = !host.is_empty()
        && (host.parse::<std::net::IpAddr>().is_ok()
            || host.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            }));
    host_ok && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0))
}

/// Parses an image reference, or says what is wrong with it.
pub fn parse_image(s: &str) -> Result<ImageRef, String> {
    let example = "e.g. `registry.example.com/shop/web:1.4.2` or `busybox:1.36`";
    if s.is_empty() {
        return Err(format!("the image reference is empty; {example}"));
    }
    if s.len() > 255 + 128 + 72 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`{}` is not an image reference: no spaces or control characters; {example}",
            s.escape_debug()
        ));
    }
    let (name_tag, digest) = match s.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest {
        let hex =
            d.strip_prefix("sha256:").ok_or_else(|| format!("digest `{d}` must be `sha256:` and 64 hex digits"))?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(format!("digest `{d}` must be `sha256:` and 64 lowercase hex digits"));
        }
    }
    // A tag is after the last `:` that follows the last `/` (a registry port has a `/` after it).
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => (&name_tag[..last_slash + i], Some(&name_tag[last_slash + i + 1..])),
        None => (name_tag, None),
    };
    if let Some(t) = tag {
        let b = t.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if !ok {
            return Err(format!(
                "tag `{t}` of `{s}` is not valid: letters, digits, `_`, `.` and `-`, at most 128, not starting with `.` or `-`"
            ));
        }
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    let first = parts.first().copied().unwrap_or("");
    let has_registry = parts.len() > 1
        && (first.contains('.') || first.contains(':') || first == "localhost" || first.starts_with('['));
    let registry = if has_registry {
        let r = parts.remove(0);
        if !registry_ok(r) {
            return Err(format!("registry `{r}` of `{s}` is not a host name or address with an optional port"));
        }
        r.to_string()
    } else {
        DEFAULT_REGISTRY.to_string()
    };
    if parts.is_empty() || parts.iter().any(|c| c.is_empty()) {
        return Err(format!("`{s}` has an empty path component; {example}"));
    }
    if let Some(bad) = parts.iter().find(|c| !component_ok(c)) {
        let hint = if bad.bytes().any(|b| b.is_ascii_uppercase()) { " (repository names are lowercase)" } else { "" };
        return Err(format!(
            "`{bad}` in `{s}` is not a valid repository name component{hint}: lowercase letters and digits, separated by `.`, `_`, `__` or `-`"
        ));
    }
    let mut repository = parts.join("/");
    if registry == DEFAULT_REGISTRY && parts.len() == 1 {
        repository = format!("library/{repository}");
    }
    let tag = match (tag, digest) {
        (Some(t), _) => Some(t.to_string()),
        (None, Some(_)) => None,
        (None, None) => Some("latest".to_string()),
    };
    Ok(ImageRef { registry, repository, tag, digest: digest.map(str::to_string) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_written_back_fully_qualified() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("shop/web:1.4.2", "docker.io/shop/web:1.4.2"),
            ("registry.example.com/shop/web:1.4.2", "registry.example.com/shop/web:1.4.2"),
            ("127.0.0.1:5000/demo/web", "127.0.0.1:5000/demo/web:latest"),
            ("localhost:5000/a/b/c:v1", "localhost:5000/a/b/c:v1"),
            ("localhost/web", "localhost/web:latest"),
            ("[::1]:5000/web:2", "[::1]:5000/web:2"),
            ("ghcr.io/o/my_app__x-y.z:1.0_rc", "ghcr.io/o/my_app__x-y.z:1.0_rc"),
        ];
        for (input, want) in cases {
            assert_eq!(parse_image(input).map(|r| r.to_string()), Ok(want.to_string()), "{input}");
        }
        let d = format!("web@sha256:{}", "a".repeat(64));
        let r = parse_image(&d).expect("digest");
        assert_eq!((r.tag.as_deref(), r.to_string()), (None, format!("docker.io/library/{d}")));
    }

    #[test]
    fn loopback_registries_are_told_apart() {
        for (r, lo) in [
            ("127.0.0.1:5000/a", true),
            ("localhost:5000/a", true),
            ("[::1]:5/a", true),
            ("r.example/a", false),
            ("a", false),
        ] {
            assert_eq!(parse_image(r).map(|i| i.registry_is_loopback()), Ok(lo), "{r}");
        }
    }

    #[test]
    fn bad_references_say_what_is_wrong() {
        let cases = [
            ("", "empty"),
            ("web app", "no spaces"),
            ("Shop/Web", "lowercase"),
            ("shop//web", "empty path component"),
            ("web:", "tag ``"),
            ("web:-x", "tag `-x`"),
            ("web@sha256:abc", "64 lowercase hex"),
            ("web@md5:abc", "must be `sha256:`"),
            ("reg.example:99999/web", "registry `reg.example:99999`"),
            ("web-/x", "`web-`"),
        ];
        for (input, want) in cases {
            let e = parse_image(input).expect_err(input);
            assert!(e.contains(want), "{input}: {e}");
        }
    }
}
