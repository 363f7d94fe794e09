//! HTTP route matching: which route serves a request for `host` and `path`.
//!
//! The host is compared without its port, lowercase, without a trailing dot. An exact route
//! host beats a `*.` wildcard, a longer wildcard suffix beats a shorter one (`*.a.example`
//! beats `*.example`); a wildcard matches names of any depth below its suffix but not the
//! suffix itself. Among routes of equally specific hosts the longest path prefix wins; a
//! prefix matches on a segment boundary (`/api` matches `/api`, `/api/` and `/api/x`, not
//! `/apix`; `/` matches everything). Only routes matching both host and path compete, so a
//! path not covered by an exact host's routes falls through to a matching wildcard route.
//! Ties (duplicate host and path) go to the first route in table order.

use std::borrow::Cow;

use crate::Route;

/// Lowercase host without port or trailing dot: `Demo.Localhost:8080` → `demo.localhost`.
pub(crate) fn normalize_host(raw: &str) -> Cow<'_, str> {
    let raw = raw.trim();
    let host = if raw.starts_with('[') {
        // IPv6 literal: keep the brackets, drop a port after them.
        raw.find(']').map_or(raw, |end| &raw[..=end])
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// How specifically a route host matches `host` (higher is better), or `None`.
fn host_rank(pattern: &str, host: &str) -> Option<usize> {
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            let below = host.strip_suffix(suffix)?.strip_suffix('.')?;
            (!below.is_empty()).then_some(suffix.len())
        }
        None => pattern.eq_ignore_ascii_case(host).then_some(usize::MAX),
    }
}

/// Whether path prefix `prefix` covers `path`, on a segment boundary.
pub(crate) fn path_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

/// The index of the route serving `host` (normalized) and `path`, if any.
pub(crate) fn match_route(routes: &[Route], host: &str, path: &str) -> Option<usize> {
    let mut best: Option<((usize, usize), usize)> = None;
    for (i, r) in routes.iter().enumerate() {
        let Some(rank) = host_rank(&r.host, host) else { continue };
        if !path_matches(&r.path, path) {
            continue;
        }
        let key = (rank, r.path.len());
        if best.is_none_or(|(b, _)| key > b) {
            best = Some((key, i));
        }
    }
    best.map(|(_, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Vec<Route> {
        let r = |host: &str, path: &str, service: &str| Route::new(host, path, service, "http");
        vec![
            r("demo.localhost", "/", "web"),
            r("demo.localhost", "/api", "api"),
            r("demo.localhost", "/api/v2/", "api2"),
            r("*.example.com", "/", "wild"),
            r("*.shop.example.com", "/", "shop"),
            r("exact.example.com", "/only", "exact"),
            r("demo.localhost", "/", "duplicate"),
            r("static.localhost", "/assets", "assets"),
        ]
    }

    /// `expected`: the service of the chosen route, or `-` for none.
    fn check(host: &str, path: &str, expected: &str) {
        let routes = routes();
        let host = normalize_host(host);
        let got = match_route(&routes, &host, path).map_or("-", |i| routes[i].service.as_str());
        assert_eq!(got, expected, "host {host:?} path {path:?}");
    }

    #[test]
    fn matching() {
        check("demo.localhost", "/", "web");
        check("demo.localhost", "/index.html", "web");
        check("demo.localhost", "/api", "api");
        check("demo.localhost", "/api/", "api");
        check("demo.localhost", "/api/users", "api");
        check("demo.localhost", "/apix", "web");
        check("demo.localhost", "/api/v2", "api");
        check("demo.localhost", "/api/v2/", "api2");
        check("demo.localhost", "/api/v2/x", "api2");
        check("DEMO.localhost:8080", "/api", "api");
        check("demo.localhost.", "/", "web");
        check("other.localhost", "/", "-");
        check("a.example.com", "/", "wild");
        check("a.b.example.com", "/x", "wild");
        check("example.com", "/", "-");
        check("xexample.com", "/", "-");
        check("a.shop.example.com", "/", "shop");
        check("shop.example.com", "/", "wild");
        check("exact.example.com", "/only/x", "exact");
        check("exact.example.com", "/other", "wild");
        check("static.localhost", "/assets/app.js", "assets");
        check("static.localhost", "/", "-");
        check("", "/", "-");
    }

    fn check_host(raw: &str, expected: &str) {
        assert_eq!(normalize_host(raw), expected, "{raw:?}");
    }

    #[test]
    fn hosts() {
        check_host("demo.localhost", "demo.localhost");
        check_host("Demo.LocalHost", "demo.localhost");
        check_host("demo.localhost:8080", "demo.localhost");
        check_host("demo.localhost.:80", "demo.localhost");
        check_host("127.0.0.1:80", "127.0.0.1");
        check_host("[::1]:8080", "[::1]");
        check_host("[::1]", "[::1]");
        check_host(" a.b ", "a.b");
        check_host("", "");
    }

    fn check_path(prefix: &str, path: &str, expected: bool) {
        assert_eq!(path_matches(prefix, path), expected, "{prefix:?} {path:?}");
    }

    #[test]
    fn paths() {
        check_path("/", "/", true);
        check_path("/", "/anything/at/all", true);
        check_path("/api", "/api", true);
        check_path("/api", "/api/", true);
        check_path("/api", "/api/x", true);
        check_path("/api", "/apix", false);
        check_path("/api", "/ap", false);
        check_path("/api/", "/api", false);
        check_path("/api/", "/api/x", true);
        check_path("/a/b", "/a/b/c", true);
        check_path("/a/b", "/a/bc", false);
    }
}
