//! `holdfast import`: a docker-compose file turned into a holdfast spec (pure; the
//! caller reads the files). Mapped: `image`, `command`, `environment`, `env_file`,
//! `ports`, `healthcheck`, `deploy.replicas`, `deploy.resources`, `restart` (and
//! `deploy.restart_policy`). Everything else is listed with its line, saying why it was
//! not carried over (`build`, `volumes`, `depends_on`, `networks`, ...), as are mapped
//! fields whose meaning changes (a container listens on `$PORT`, not on a fixed port).
//! The spec written is checked by the spec parser before it is returned.

use std::collections::BTreeMap;

use crate::error::LineCol;
use crate::yaml::{parse_documents, Kind, Node};

/// The result of an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The spec, as YAML text.
    pub spec: String,
    /// `file:line:col: field: what was not carried over, or what changes`, in file order.
    pub notes: Vec<String>,
}

/// Reads an `env_file` named in the compose file (relative to it): its text, or why not.
pub type ReadEnvFile<'a> = &'a dyn Fn(&str) -> Result<String, String>;

struct Ctx<'a> {
    file: &'a str,
    notes: Vec<(Option<LineCol>, String)>,
}

impl Ctx<'_> {
    fn note(&mut self, node: &Node, path: &str, msg: impl Into<String>) {
        self.notes.push((node.pos, format!("{path}: {}", msg.into())));
    }
}

fn get<'n>(map: &'n [(Node, Node)], key: &str) -> Option<&'n Node> {
    map.iter().find(|(k, _)| k.scalar_text().as_deref() == Some(key)).map(|(_, v)| v)
}

/// A YAML double-quoted string (escapes `\`, `"` and control characters).
fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|s| q(s)).collect::<Vec<_>>().join(", "))
}

/// Splits a compose command string the way compose does (shell words, no shell).
fn shell_words(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => return Err(format!("unclosed ' in `{s}`")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(x) => cur.push(x),
                            None => return Err(format!("a trailing \\ in `{s}`")),
                        },
                        Some(x) => cur.push(x),
                        None => return Err(format!("unclosed \" in `{s}`")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(x) = chars.next() {
                    cur.push(x);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

fn strings(node: &Node) -> Option<Vec<String>> {
    match &node.kind {
        Kind::Seq(items) => items.iter().map(|i| i.scalar_text().map(|t| unescape(&t))).collect(),
        _ => None,
    }
}

/// Compose's `$$` is a literal `$` (for the container's shell to expand).
fn unescape(s: &str) -> String {
    s.replace("$$", "$")
}

/// `KEY=VALUE` lines of an env file (comments and blank lines skipped; `export ` and
/// matching quotes removed).
fn env_file_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = match (v.chars().next(), v.chars().last()) {
                (Some('"'), Some('"')) | (Some('\''), Some('\'')) if v.len() >= 2 => &v[1..v.len() - 1],
                _ => v,
            };
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

/// Compose's memory units (binary: `512m` is 512 MiB) in holdfast's.
fn memory(text: &str) -> Option<String> {
    let t = text.trim().to_ascii_lowercase();
    let digits: String = t.chars().take_while(|c| c.is_ascii_digit()).collect();
    let n: u64 = digits.parse().ok()?;
    let unit = t[digits.len()..].trim_end_matches('b');
    Some(match unit {
        "" => format!("{n}"),
        "k" => format!("{n}Ki"),
        "m" => format!("{n}Mi"),
        "g" => format!("{n}Gi"),
        _ => return None,
    })
}

/// A compose duration (`1m30s`, `500ms`) as holdfast writes them (the same units).
fn duration(node: &Node) -> Option<String> {
    let t = node.scalar_text()?;
    let ok = !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || matches!(c, 'h' | 'm' | 's' | 'u' | '.'));
    ok.then_some(t)
}

/// The fields of one compose service, as holdfast spec lines (indented under it).
fn service(ctx: &mut Ctx<'_>, name: &str, map: &[(Node, Node)], read: ReadEnvFile<'_>) -> Vec<String> {
    let path = format!("services.{name}");
    let mut out = Vec::new();
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut explicit_env: BTreeMap<String, String> = BTreeMap::new();
    let mut resources: Vec<String> = Vec::new();
    let mut replicas: Option<String> = None;
    let mut restart: Option<&str> = None;
    for (k, v) in map {
        let key = k.scalar_text().unwrap_or_default();
        let fp = format!("{path}.{key}");
        match key.as_str() {
            "image" => match v.scalar_text().map(|t| crate::image::parse_image(&t)) {
                Some(Ok(r)) => out.push(format!("image: {}", q(&r.to_string()))),
                Some(Err(e)) => ctx.note(v, &fp, format!("not imported: {e}")),
                None => ctx.note(v, &fp, "not imported: expected an image reference"),
            },
            "command" => {
                let argv = match &v.kind {
                    Kind::Str(s) => shell_words(&unescape(s)),
                    _ => strings(v).ok_or_else(|| "expected a string or a list".to_string()),
                };
                match argv {
                    Ok(a) if !a.is_empty() => out.push(format!("run: {}", list(&a))),
                    Ok(_) => {}
                    Err(e) => ctx.note(v, &fp, format!("not imported: {e}")),
                }
            }
            "environment" => match &v.kind {
                Kind::Map(pairs) => {
                    for (ek, ev) in pairs {
                        let name = ek.scalar_text().unwrap_or_default();
                        match ev.scalar_text() {
                            Some(val) => {
                                explicit_env.insert(name, unescape(&val));
                            }
                            None => ctx.note(ev, &format!("{fp}.{name}"), "not imported: a value from the host's environment; give it a value (or a secret: `{ secret: name }`)"),
                        }
                    }
                }
                Kind::Seq(items) => {
                    for it in items {
                        match it.scalar_text().as_deref().and_then(|s| s.split_once('=')) {
                            Some((a, b)) => {
                                explicit_env.insert(a.to_string(), unescape(b));
                            }
                            None => ctx.note(it, &fp, "not imported: a value from the host's environment; give it a value"),
                        }
                    }
                }
                _ => ctx.note(v, &fp, "not imported: expected a mapping or a list of KEY=VALUE"),
            },
            "env_file" => {
                let files = match &v.kind {
                    Kind::Str(s) => vec![s.clone()],
                    _ => strings(v).unwrap_or_default(),
                };
                for f in files {
                    match read(&f) {
                        Ok(text) => env.extend(env_file_lines(&text)),
                        Err(e) => ctx.note(v, &fp, format!("not imported: cannot read {f}: {e}")),
                    }
                }
                ctx.note(v, &fp, "its values are written into the spec's env: move passwords to secrets (`holdfast secret set`)");
            }
            "ports" => {
                let mut ports = Vec::new();
                for p in match &v.kind {
                    Kind::Seq(items) => items.as_slice(),
                    _ => std::slice::from_ref(v),
                } {
                    let (published, target) = match &p.kind {
                        Kind::Map(m) => (
                            get(m, "published").and_then(Node::scalar_text),
                            get(m, "target").and_then(Node::scalar_text),
                        ),
                        _ => {
                            let text = p.scalar_text().unwrap_or_default();
                            let text = text.split('/').next().unwrap_or("").to_string();
                            let parts: Vec<&str> = text.rsplitn(3, ':').collect();
                            match parts.as_slice() {
                                [t] => (None, Some(t.to_string())),
                                [t, h, ..] => (Some(h.to_string()), Some(t.to_string())),
                                _ => (None, None),
                            }
                        }
                    };
                    let number = published.or(target.clone()).and_then(|n| n.parse::<u16>().ok()).filter(|n| *n > 0);
                    match number {
                        Some(n) => {
                            ports.push(format!("p{n}: {n}"));
                            ctx.note(p, &fp, format!(
                                "port {n} is the service's stable port; the container must listen on $PORT (or $PORT_P{n}), which holdfast sets, not on {}",
                                target.unwrap_or_else(|| n.to_string())
                            ));
                        }
                        None => ctx.note(p, &fp, "not imported: a port range or an unreadable port"),
                    }
                }
                if !ports.is_empty() {
                    out.push(format!("ports: {{{}}}", ports.join(", ")));
                }
            }
            "healthcheck" => {
                let Kind::Map(h) = &v.kind else {
                    ctx.note(v, &fp, "not imported: expected a mapping");
                    continue;
                };
                if get(h, "disable").and_then(Node::scalar_text).as_deref() == Some("true") {
                    continue;
                }
                let test = get(h, "test");
                let argv = match test.map(|t| &t.kind) {
                    Some(Kind::Str(s)) => Some(vec!["/bin/sh".to_string(), "-c".to_string(), unescape(s)]),
                    Some(Kind::Seq(_)) => {
                        let items = test.and_then(strings).unwrap_or_default();
                        match items.split_first() {
                            Some((first, rest)) if first == "CMD" => Some(rest.to_vec()),
                            Some((first, rest)) if first == "CMD-SHELL" => {
                                Some(vec!["/bin/sh".to_string(), "-c".to_string(), rest.join(" ")])
                            }
                            _ => None,
                        }
                    }
                    _ => None,
                };
                let Some(argv) = argv.filter(|a| !a.is_empty()) else {
                    ctx.note(v, &fp, "not imported: no CMD or CMD-SHELL test");
                    continue;
                };
                let mut parts = vec![format!("exec: {}", list(&argv))];
                for (ck, hk) in [("interval", "interval"), ("timeout", "timeout"), ("start_period", "start_grace")] {
                    if let Some(d) = get(h, ck).and_then(duration) {
                        parts.push(format!("{hk}: {d}"));
                    }
                }
                if let Some(r) = get(h, "retries").and_then(Node::scalar_text) {
                    parts.push(format!("unhealthy_threshold: {r}"));
                }
                out.push(format!("health: {{{}}}", parts.join(", ")));
            }
            "deploy" => {
                let Kind::Map(d) = &v.kind else { continue };
                for (dk, dv) in d {
                    let dkey = dk.scalar_text().unwrap_or_default();
                    let dp = format!("{fp}.{dkey}");
                    match dkey.as_str() {
                        "replicas" => replicas = dv.scalar_text(),
                        "resources" => {
                            let Kind::Map(r) = &dv.kind else { continue };
                            let pick = get(r, "limits").or_else(|| get(r, "reservations"));
                            if let Some(Node { kind: Kind::Map(l), .. }) = pick {
                                if let Some(c) = get(l, "cpus").and_then(Node::scalar_text) {
                                    resources.push(format!("cpu: {c}"));
                                }
                                if let Some(m) = get(l, "memory").and_then(Node::scalar_text) {
                                    match memory(&m) {
                                        Some(m) => resources.push(format!("memory: {m}")),
                                        None => ctx.note(dv, &dp, format!("not imported: memory `{m}`")),
                                    }
                                }
                            }
                        }
                        "restart_policy" => {
                            if let Kind::Map(rp) = &dv.kind {
                                restart = match get(rp, "condition").and_then(Node::scalar_text).as_deref() {
                                    Some("none") => Some("never"),
                                    Some("on-failure") => Some("on-failure"),
                                    _ => Some("always"),
                                };
                            }
                        }
                        _ => ctx.note(dv, &dp, "not imported: holdfast places and updates replicas itself"),
                    }
                }
            }
            "restart" => {
                let r = v.scalar_text().unwrap_or_default();
                restart = Some(match r.as_str() {
                    "no" => "never",
                    "always" | "unless-stopped" => "always",
                    s if s.starts_with("on-failure") => "on-failure",
                    _ => {
                        ctx.note(v, &fp, format!("not imported: unknown restart `{r}`"));
                        continue;
                    }
                });
            }
            "build" => ctx.note(v, &fp, "not imported: holdfast runs images; build and push it, then give `image:`"),
            "volumes" => ctx.note(v, &fp, "not imported: volumes are not supported yet"),
            "depends_on" => ctx.note(
                v,
                &fp,
                "not imported: holdfast starts services independently; let the service retry what it depends on (health checks keep it out of rotation until then)",
            ),
            "container_name" | "hostname" => {
                ctx.note(v, &fp, format!("not imported: instances are named by holdfast; reach the service as `{name}.<project>.internal`"))
            }
            "networks" | "network_mode" | "links" | "extra_hosts" | "dns" => {
                ctx.note(v, &fp, "not imported: every service reaches the others by name through holdfast's own networking")
            }
            _ => ctx.note(v, &fp, "not imported: no holdfast equivalent"),
        }
    }
    env.extend(explicit_env);
    if let Some(r) = replicas {
        out.push(format!("replicas: {r}"));
    }
    if !env.is_empty() {
        out.push("env:".to_string());
        for (k, v) in &env {
            out.push(format!("  {}: {}", q(k), q(v)));
        }
    }
    if !resources.is_empty() {
        out.push(format!("resources: {{{}}}", resources.join(", ")));
    }
    if let Some(r) = restart {
        out.push(format!("restart: {r}"));
    }
    out
}

/// Imports the compose file `file` (its text `src`): as project `explicit` when given,
/// else the file's `name:`, else `fallback`.
pub fn import_compose(
    file: &str,
    src: &str,
    explicit: Option<&str>,
    fallback: &str,
    read: ReadEnvFile<'_>,
) -> Result<Imported, String> {
    let docs = parse_documents(src).map_err(|e| match e.pos {
        Some(p) => format!("{file}:{}:{}: {}", p.line, p.column, e.message),
        None => format!("{file}: {}", e.message),
    })?;
    let Some(Node { kind: Kind::Map(top), .. }) = docs.first() else {
        return Err(format!("{file}: expected a compose file (a mapping with `services:`)"));
    };
    let mut ctx = Ctx { file, notes: Vec::new() };
    let project = match explicit {
        Some(p) => p.to_string(),
        None => get(top, "name").and_then(Node::scalar_text).unwrap_or_else(|| fallback.to_string()),
    };
    let mut lines = vec![format!("project: {}", q(&project)), "services:".to_string()];
    let mut count = 0;
    for (k, v) in top {
        let key = k.scalar_text().unwrap_or_default();
        match key.as_str() {
            "services" => {
                let Kind::Map(services) = &v.kind else {
                    return Err(format!("{file}: `services` must be a mapping"));
                };
                for (sk, sv) in services {
                    let name = sk.scalar_text().unwrap_or_default();
                    let Kind::Map(fields) = &sv.kind else {
                        ctx.note(sv, &format!("services.{name}"), "not imported: expected a mapping");
                        continue;
                    };
                    let body = service(&mut ctx, &name, fields, read);
                    if !body.iter().any(|l| l.starts_with("image:")) {
                        ctx.note(sv, &format!("services.{name}"), "not imported: it has no image");
                        continue;
                    }
                    count += 1;
                    lines.push(format!("  {name}:"));
                    lines.extend(body.into_iter().map(|l| format!("    {l}")));
                }
            }
            "version" | "name" => {}
            _ => ctx.note(v, &key, "not imported: no holdfast equivalent"),
        }
    }
    if count == 0 {
        return Err(format!("{file}: no service with an image to import"));
    }
    let spec = lines.join("\n") + "\n";
    // What we write must be a valid spec.
    crate::parse_str("imported.yaml", &spec).map_err(|e| format!("the imported spec does not check: {e}"))?;
    let notes = ctx
        .notes
        .into_iter()
        .map(|(pos, msg)| match pos {
            Some(p) => format!("{}:{}:{}: {msg}", ctx.file, p.line, p.column),
            None => format!("{}: {msg}", ctx.file),
        })
        .collect();
    Ok(Imported { spec, notes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_follow_compose() {
        assert_eq!(
            shell_words(r#"python app.py --name "a b" 'c d' e\ f"#).ok(),
            Some(vec!["python".into(), "app.py".into(), "--name".into(), "a b".into(), "c d".into(), "e f".into()])
        );
        assert!(shell_words("echo 'open").is_err());
    }

    #[test]
    fn every_mapped_field_is_carried_and_the_rest_is_named_with_its_line() {
        let compose = r#"version: "3.9"
name: shop
services:
  web:
    image: registry.example.com/shop/web:1.4.2
    command: ./web --workers "2"
    environment:
      MODE: production
      FROM_HOST:
    env_file: web.env
    ports: ["8080:80", {target: 9100, published: 9100}]
    healthcheck:
      test: ["CMD", "wget", "-q", "-O-", "http://127.0.0.1:8080/healthz"]
      interval: 10s
      timeout: 2s
      retries: 5
      start_period: 30s
    deploy:
      replicas: 3
      resources: {limits: {cpus: "0.5", memory: 512M}}
    restart: unless-stopped
    depends_on: [db]
    volumes: ["data:/var/lib/web"]
  worker:
    image: busybox
    command: ["sh", "-c", "echo work"]
    environment: ["QUEUE=jobs"]
    healthcheck: {test: "pgrep worker"}
    restart: "no"
  builder:
    build: .
volumes:
  data: {}
"#;
        let read = |f: &str| -> Result<String, String> {
            assert_eq!(f, "web.env");
            Ok("# comment\nexport TOKEN=\"abc\"\nMODE=dev\n".to_string())
        };
        let out = import_compose("docker-compose.yml", compose, None, "ignored", &read).expect("imports");
        assert_eq!(
            out.spec,
            r#"project: "shop"
services:
  web:
    image: "registry.example.com/shop/web:1.4.2"
    run: ["./web", "--workers", "2"]
    ports: {p8080: 8080, p9100: 9100}
    health: {exec: ["wget", "-q", "-O-", "http://127.0.0.1:8080/healthz"], interval: 10s, timeout: 2s, start_grace: 30s, unhealthy_threshold: 5}
    replicas: 3
    env:
      "MODE": "production"
      "TOKEN": "abc"
    resources: {cpu: 0.5, memory: 512Mi}
    restart: always
  worker:
    image: "docker.io/library/busybox:latest"
    run: ["sh", "-c", "echo work"]
    health: {exec: ["/bin/sh", "-c", "pgrep worker"]}
    env:
      "QUEUE": "jobs"
    restart: never
"#
        );
        assert_eq!(
            out.notes,
            vec![
                "docker-compose.yml:9:16: services.web.environment.FROM_HOST: not imported: a value from the host's environment; give it a value (or a secret: `{ secret: name }`)",
                "docker-compose.yml:10:15: services.web.env_file: its values are written into the spec's env: move passwords to secrets (`holdfast secret set`)",
                "docker-compose.yml:11:13: services.web.ports: port 8080 is the service's stable port; the container must listen on $PORT (or $PORT_P8080), which holdfast sets, not on 80",
                "docker-compose.yml:11:24: services.web.ports: port 9100 is the service's stable port; the container must listen on $PORT (or $PORT_P9100), which holdfast sets, not on 9100",
                "docker-compose.yml:22:17: services.web.depends_on: not imported: holdfast starts services independently; let the service retry what it depends on (health checks keep it out of rotation until then)",
                "docker-compose.yml:23:14: services.web.volumes: not imported: volumes are not supported yet",
                "docker-compose.yml:31:12: services.builder.build: not imported: holdfast runs images; build and push it, then give `image:`",
                "docker-compose.yml:31:5: services.builder: not imported: it has no image",
                "docker-compose.yml:33:3: volumes: not imported: no holdfast equivalent",
            ]
        );
    }

    #[test]
    fn memory_units_are_binary() {
        assert_eq!(memory("512m").as_deref(), Some("512Mi"));
        assert_eq!(memory("1G").as_deref(), Some("1Gi"));
        assert_eq!(memory("64kb").as_deref(), Some("64Ki"));
        assert_eq!(memory("100").as_deref(), Some("100"));
        assert_eq!(memory("1.5g"), None);
    }
}
