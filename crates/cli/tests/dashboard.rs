//! End-to-end test of the web dashboard (`/ui/`): a real headless Chromium (Debian's
//! `chromium`, driven over the DevTools protocol by `dashboard_cdp.py`) signs in with the
//! token form and reads the overview and a service page with its charts; curl checks the
//! login rules and a follower's view; and the pages keep answering while `wrk` saturates
//! the ingress. It starts with one sentence of what it proves.
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const CDP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dashboard_cdp.py");
const HOST: &str = "dash.localhost";

/// Whether `tool` is installed (required under CI: scripts/test.sh installs `package`).
fn have(tool: &str, package: &str) -> bool {
    let found =
        Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(std::env::var("CI").is_err(), "CI must have {tool} (Debian package {package}, scripts/test.sh)");
        eprintln!("skipping: no {tool} here (apt-get install {package})");
    }
    found
}

/// One HTTP answer as curl saw it.
struct Answer {
    code: u16,
    headers: String,
    body: String,
    secs: f64,
}

/// A request to `node`'s holdfast port with the real curl (the cluster CA trusted), with
/// a bearer `token` and a login `form` token when given.
fn curl(node: &Node, path: &str, token: Option<&str>, form: Option<&str>) -> Answer {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-D", "-", "--max-time", "10", "-w", "\n%{http_code} %{time_total}", "--cacert"])
        .arg(node.dir.join("ca.pem"));
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if let Some(f) = form {
        cmd.args(["--data-urlencode", &format!("token={f}")]);
    }
    let out = cmd.arg(format!("https://{}{path}", node.addr())).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (response, tail) = text.rsplit_once('\n').unwrap_or(("", "0 0"));
    let (code, secs) = tail.split_once(' ').unwrap_or(("0", "0"));
    let (headers, body) = response.split_once("\r\n\r\n").unwrap_or((response, ""));
    Answer {
        code: code.trim().parse().unwrap_or(0),
        headers: headers.to_ascii_lowercase(),
        body: body.to_string(),
        secs: secs.trim().parse().unwrap_or(f64::MAX),
    }
}

/// `(width, height)` of a PNG file's header, if it is one.
fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    let signature = b"\x89PNG\r\n\x1a\n";
    if bytes.len() < 24 || &bytes[..8] != signature || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Some((be(&bytes[16..20]), be(&bytes[20..24])))
}

#[test]
fn the_dashboard_shows_the_cluster_in_a_real_browser_and_answers_while_the_ingress_is_saturated() {
    // Proves: a browser is sent to the login page, signs in with the token form, sees both
    // nodes by site, the service's instances, a refresh through htmx and the service's CPU
    // and memory charts, loading nothing from anywhere else, and is sent back to the login
    // page once logged out or without its cookie; a follower shows what the leader knows;
    // tokens are checked like `/v1` reads; and pages answer within 2 s while wrk
    // saturates the node's ingress.
    let Some(py) = common::pg::python() else { return };
    let has_ws = Command::new(&py).args(["-c", "import websocket"]).output().is_ok_and(|o| o.status.success());
    if !has_ws {
        assert!(std::env::var("CI").is_err(), "CI must have websocket-client (scripts/pyenv.sh)");
        eprintln!("skipping: no websocket-client in HOLDFAST_TEST_PYTHON");
        return;
    }
    if !have("chromium", "chromium") || !have("wrk", "wrk") {
        return;
    }
    let nodes = cluster("dashboard", 46000, &["east", "west"]);
    let (n1, n2) = (&nodes[0], &nodes[1]);
    let (ok, out, err) = n1.deploy_yaml("web.yaml", &demo_web("dash", 2, Some(HOST)));
    assert!(ok, "{out}\n{err}");
    n1.wait_ready("web", 2, Duration::from_secs(30));
    let admin = std::fs::read_to_string(n1.dir.join("admin.token")).expect("admin token");
    let admin = admin.trim();

    // Without a token: a page goes to the login form, a fragment is refused; the static
    // files need none.
    let page = curl(n1, "/ui/", None, None);
    assert_eq!(page.code, 303, "{}", page.headers);
    assert!(page.headers.contains("location: /ui/login"), "{}", page.headers);
    let fragment = curl(n1, "/ui/fragments/nodes", None, None);
    assert_eq!(fragment.code, 401);
    assert!(fragment.headers.contains("hx-redirect: /ui/login"));
    let htmx = curl(n1, "/ui/static/htmx.min.js", None, None);
    assert_eq!(htmx.code, 200);
    assert!(htmx.headers.contains("content-type: text/javascript") && htmx.headers.contains("cache-control: public"));
    assert!(htmx.body.starts_with("var htmx="));

    // The login form: a bad token shows the form again (401); a good one sets the cookie.
    let bad = curl(n1, "/ui/login", None, Some("not-a-token"));
    assert_eq!(bad.code, 401);
    assert!(bad.body.contains(r#"name="token""#) && bad.body.contains("the token was refused"), "{}", bad.body);
    let writer = n1.cli_json(&["acl", "token", "create", "--scope", "secrets:dash/x", "--name", "w"]).expect("token");
    let writer = writer["token"].as_str().expect("token");
    let cannot_read = curl(n1, "/ui/login", None, Some(writer));
    assert_eq!(cannot_read.code, 401);
    assert!(cannot_read.body.contains("may not read"), "{}", cannot_read.body);
    assert_eq!(curl(n1, "/ui/", Some(writer), None).code, 303, "a token that may not read sees no page");
    let good = curl(n1, "/ui/login", None, Some(admin));
    assert_eq!(good.code, 303);
    assert!(good.headers.contains("location: /ui/"), "{}", good.headers);
    let set_cookie = good.headers.lines().find(|l| l.starts_with("set-cookie:")).expect("a cookie").to_string();
    for attr in ["holdfast_ui=", "httponly", "secure", "samesite=strict", "path=/ui"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    let read = n1.cli_json(&["acl", "token", "create", "--scope", "read", "--name", "dash"]).expect("token");
    let read = read["token"].as_str().expect("token");
    let shown = curl(n1, "/ui/", Some(read), None);
    assert_eq!(shown.code, 200);
    assert!(shown.headers.contains("content-security-policy: default-src 'self'"), "{}", shown.headers);

    // A follower shows the cluster as the leader sees it: every instance's state.
    wait_for("n2's dashboard to show both instances ready", Duration::from_secs(20), || {
        let a = curl(n2, "/ui/fragments/services", Some(read), None);
        let ready = a.body.matches(">ready</span>").count();
        seen_unless(a.code == 200 && ready == 2 && a.body.contains("web-0") && a.body.contains("web-1"), (), a.body)
    });
    let follower = curl(n2, "/ui/", Some(read), None);
    assert_eq!(follower.code, 200);
    assert!(!follower.body.contains("unavailable"), "{}", follower.body);
    assert!(follower.body.contains("Site east") && follower.body.contains("Site west"), "{}", follower.body);
    assert!(follower.body.contains("as seen by node n2"));

    // Each instance has usage samples (two, so CPU has a rate), as the charts draw them.
    wait_for("two lines in each chart", Duration::from_secs(60), || {
        let a = curl(n1, "/ui/fragments/services/web", Some(admin), None);
        let lines = a.body.matches(r#"<path class="series""#).count();
        seen_unless(a.code == 200 && lines == 4, (), format!("{lines} lines"))
    });

    // The browser.
    let base = format!("https://{}", n1.addr());
    let out = Command::new(&py)
        .args([CDP, "chromium", &base, admin, "web"])
        .arg(&n1.home)
        .stderr(Stdio::inherit())
        .output()
        .expect("python");
    assert!(out.status.success(), "the browser session failed: {}", String::from_utf8_lossy(&out.stdout));
    let seen: Value = serde_json::from_slice(&out.stdout).expect("the session's JSON");
    assert_eq!(seen["login_path"], "/ui/login", "{seen}");
    let overview = seen["overview_text"].as_str().unwrap_or_default();
    for want in ["Site east", "Site west", "n1", "n2", "web", "web-0", "web-1", HOST, "Recent events"] {
        assert!(overview.contains(want), "the overview lacks {want:?}:\n{overview}");
    }
    assert!(!overview.contains("unavailable"), "{overview}");
    assert!(seen["htmx_swaps"].as_u64() >= Some(1), "htmx refreshed a section: {seen}");
    let service = seen["service_text"].as_str().unwrap_or_default();
    for want in ["Service web", "web-0", "web-1", "CPU (millicores)", "Memory", "-60m", "now"] {
        assert!(service.contains(want), "the service page lacks {want:?}:\n{service}");
    }
    assert_eq!(seen["after_logout"], "/ui/login", "logging out drops the cookie: {seen}");
    assert_eq!(seen["after_cookie_lost"], "/ui/login", "a refresh without the cookie goes to the login page");
    assert_eq!(seen["charts"], 2, "{seen}");
    assert_eq!(seen["chart_lines"], 4, "one line per instance in each chart: {seen}");
    let requested: Vec<&str> = seen["requested"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    assert!(requested.iter().any(|u| u.ends_with("/ui/static/htmx.min.js")), "{requested:?}");
    assert!(requested.iter().all(|u| u.starts_with(&base)), "nothing from elsewhere: {requested:?}");
    assert_eq!(seen["console_errors"], Value::Array(vec![]), "no errors in the console (CSP, scripts)");
    for shot in ["overview.png", "service.png"] {
        let png = std::fs::read(n1.home.join(shot)).expect("the screenshot");
        assert_eq!(png_size(&png), Some((1280, 1400)), "{shot}: a PNG of the window");
        assert!(png.len() > 20_000, "{shot}: a screenshot with content, not a blank page: {} bytes", png.len());
    }

    // Saturate the ingress with wrk for 10 s; the pages keep answering within 2 s.
    let url = format!("http://{}:{}/", n1.ip, n1.http_port);
    let wrk = n1
        .client_command(&["wrk", "-t2", "-c64", "-d10s", "--timeout", "5s", "-H", &format!("Host: {HOST}"), &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut wrk = wrk.expect("wrk");
    let started = Instant::now();
    let mut times: Vec<(&str, u16, f64)> = Vec::new();
    while wrk.try_wait().expect("wrk").is_none() && started.elapsed() < Duration::from_secs(30) {
        for path in ["/ui/", "/ui/services/web"] {
            let a = curl(n1, path, Some(admin), None);
            times.push((path, a.code, a.secs));
        }
    }
    let wrk = wrk.wait_with_output().expect("wrk");
    let report = String::from_utf8_lossy(&wrk.stdout).into_owned();
    assert!(wrk.status.success(), "wrk: {report}{}", String::from_utf8_lossy(&wrk.stderr));
    eprintln!("wrk against the ingress:\n{report}");
    let mut secs: Vec<f64> = times.iter().map(|t| t.2).collect();
    secs.sort_by(f64::total_cmp);
    eprintln!(
        "dashboard during it: {} answers, median {:.3} s, max {:.3} s",
        secs.len(),
        secs.get(secs.len() / 2).copied().unwrap_or_default(),
        secs.last().copied().unwrap_or_default()
    );
    let requests: u64 = report
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ").and_then(|(n, _)| n.trim().parse().ok()))
        .unwrap_or(0);
    assert!(requests > 1000, "wrk kept the ingress busy: {report}");
    assert!(times.len() >= 6, "several dashboard requests during the load: {times:?}");
    for (path, code, secs) in &times {
        assert_eq!(*code, 200, "{path} during the load: {times:?}");
        assert!(*secs < 2.0, "{path} took {secs} s during the load: {times:?}");
    }
    nodes.finish();
}
