//! Header rewriting at the ingress edge (pure): hop-by-hop headers out, `X-Forwarded-*` in.

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether the request asks to switch protocols (`Connection: upgrade` + `Upgrade: x`).
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes hop-by-hop headers: the fixed list of RFC 9110 §7.6.1 and any header named in
/// `Connection`. With `keep_upgrade`, `Connection: upgrade` and `Upgrade` stay (WebSocket).
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Fast path: one pass over the (few) names instead of a hash lookup per listed header.
    let hop_by_hop = |n: &HeaderName| {
        n == header::CONNECTION
            || n == header::UPGRADE
            || n == header::TE
            || n == header::TRAILER
            || n == header::TRANSFER_ENCODING
            || n == header::PROXY_AUTHORIZATION
            || n == header::PROXY_AUTHENTICATE
            || n == KEEP_ALIVE
            || n == PROXY_CONNECTION
    };
    if !keep_upgrade && !headers.keys().any(hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !(keep_upgrade && n == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::PROXY_AUTHORIZATION,
        &header::PROXY_AUTHENTICATE,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
    ] {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
}

/// Rewrites the headers of a request going to a backend: hop-by-hop out (upgrade headers kept
/// when `upgrade`), `Host: host`, the client IP appended to `X-Forwarded-For`,
/// `X-Forwarded-Proto: <proto>` (`http` or `https`, how the client reached us) and `X-Forwarded-Host: host` (we are the edge: incoming values of
/// the last two are overwritten), `Expect` dropped (the ingress already answered it), and
/// HTTP/2's split `Cookie` headers joined for the HTTP/1.1 backend.
pub(crate) fn forward_request(
    headers: &mut HeaderMap,
    client: &HeaderValue,
    host: Option<&HeaderValue>,
    upgrade: bool,
    proto: &'static str,
) {
    strip_hop_by_hop(headers, upgrade);
    headers.remove(header::EXPECT);
    if let Some(host) = host {
        headers.insert(header::HOST, host.clone());
        headers.insert(&X_FORWARDED_HOST, host.clone());
    }
    if headers.contains_key(&X_FORWARDED_FOR) {
        let mut all: Vec<&[u8]> = headers.get_all(&X_FORWARDED_FOR).iter().map(HeaderValue::as_bytes).collect();
        all.push(client.as_bytes());
        if let Ok(xff) = HeaderValue::from_bytes(&all.join(&b", "[..])) {
            headers.insert(&X_FORWARDED_FOR, xff);
        }
    } else {
        headers.insert(&X_FORWARDED_FOR, client.clone());
    }
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if headers.get_all(header::COOKIE).iter().nth(1).is_some() {
        let joined: Vec<&[u8]> = headers.get_all(header::COOKIE).iter().map(HeaderValue::as_bytes).collect();
        if let Ok(v) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
            headers.insert(header::COOKIE, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(headers: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        for kv in headers.split('|').filter(|s| !s.trim().is_empty()) {
            let (k, v) = kv.split_once(':').unwrap();
            map.append(HeaderName::from_bytes(k.trim().as_bytes()).unwrap(), HeaderValue::from_str(v.trim()).unwrap());
        }
        map
    }

    fn render(map: &HeaderMap) -> String {
        let mut v: Vec<String> = map.iter().map(|(k, v)| format!("{k}: {}", v.to_str().unwrap())).collect();
        v.sort();
        v.join(" | ")
    }

    /// Headers as `name: value | name: value`; the output is sorted.
    fn check(input: &str, host: Option<&str>, upgrade: bool, expected: &str) {
        let mut map = parse(input);
        let host = host.map(|h| HeaderValue::from_str(h).unwrap());
        forward_request(&mut map, &HeaderValue::from_static("10.0.0.7"), host.as_ref(), upgrade, "http");
        assert_eq!(render(&map), expected, "{input}");
    }

    #[test]
    fn https_is_forwarded_as_such() {
        let mut map = parse("x-forwarded-proto: http");
        forward_request(&mut map, &HeaderValue::from_static("10.0.0.7"), None, false, "https");
        assert_eq!(render(&map), "x-forwarded-for: 10.0.0.7 | x-forwarded-proto: https");
    }

    #[test]
    fn request_rewrite() {
        check("", Some("demo.localhost"), false, "host: demo.localhost | x-forwarded-for: 10.0.0.7 | x-forwarded-host: demo.localhost | x-forwarded-proto: http");
        check("x-forwarded-for: 1.2.3.4", None, false, "x-forwarded-for: 1.2.3.4, 10.0.0.7 | x-forwarded-proto: http");
        check(
            "x-forwarded-for: 1.2.3.4 | x-forwarded-for: 5.6.7.8",
            None,
            false,
            "x-forwarded-for: 1.2.3.4, 5.6.7.8, 10.0.0.7 | x-forwarded-proto: http",
        );
        check(
            "x-forwarded-proto: https | x-forwarded-host: evil",
            Some("a"),
            false,
            "host: a | x-forwarded-for: 10.0.0.7 | x-forwarded-host: a | x-forwarded-proto: http",
        );
        check("connection: keep-alive, x-secret | x-secret: 1 | keep-alive: timeout=5 | te: trailers | transfer-encoding: chunked | accept: */*", None, false, "accept: */* | x-forwarded-for: 10.0.0.7 | x-forwarded-proto: http");
        check(
            "proxy-authorization: basic x | proxy-connection: keep-alive | trailer: x | expect: 100-continue",
            None,
            false,
            "x-forwarded-for: 10.0.0.7 | x-forwarded-proto: http",
        );
        check("connection: Upgrade | upgrade: websocket | sec-websocket-key: k", None, true, "connection: upgrade | sec-websocket-key: k | upgrade: websocket | x-forwarded-for: 10.0.0.7 | x-forwarded-proto: http");
        check(
            "connection: upgrade | upgrade: websocket",
            None,
            false,
            "x-forwarded-for: 10.0.0.7 | x-forwarded-proto: http",
        );
        check(
            "cookie: a=1 | cookie: b=2",
            None,
            false,
            "cookie: a=1; b=2 | x-forwarded-for: 10.0.0.7 | x-forwarded-proto: http",
        );
        check("cookie: a=1", None, false, "cookie: a=1 | x-forwarded-for: 10.0.0.7 | x-forwarded-proto: http");
    }

    fn check_upgrade(input: &str, expected: bool) {
        assert_eq!(is_upgrade(&parse(input)), expected, "{input}");
    }

    #[test]
    fn upgrade_detection() {
        check_upgrade("connection: Upgrade | upgrade: websocket", true);
        check_upgrade("connection: keep-alive, upgrade | upgrade: websocket", true);
        check_upgrade("connection: keep-alive | connection: upgrade | upgrade: websocket", true);
        check_upgrade("upgrade: websocket", false);
        check_upgrade("connection: upgrade", false);
        check_upgrade("", false);
    }

    #[test]
    fn response_strip() {
        let mut m =
            parse("connection: close | keep-alive: timeout=5 | transfer-encoding: chunked | content-type: text/plain");
        strip_hop_by_hop(&mut m, false);
        assert_eq!(render(&m), "content-type: text/plain");
        let mut m = parse("connection: Upgrade | upgrade: websocket | sec-websocket-accept: x");
        strip_hop_by_hop(&mut m, true);
        assert_eq!(render(&m), "connection: upgrade | sec-websocket-accept: x | upgrade: websocket");
    }
}
