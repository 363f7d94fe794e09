//! Human output: plans and status as aligned tables.
use std::fmt::Write;

use holdfast_api::types::{NodeLabelsResponse, NodesResponse, StatusResponse};
use holdfast_state::plan::{Change, ChangeKind, Plan};

/// Renders rows as a left-aligned table with a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<String>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let pad = widths[i] - c.chars().count();
                s.push_str(c);
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        s.trim_end().to_string()
    };
    out.push_str(&line(header.iter().map(|h| h.to_string()).collect()));
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.clone()));
        out.push('\n');
    }
    out
}

/// `holdfast cert ls`: one row per certificate, then where ACME orders go.
pub fn certs(r: &holdfast_api::types::CertsResponse, now_ms: u64) -> String {
    let mut out = String::new();
    if r.certs.is_empty() {
        out.push_str("no route has tls\n");
    } else {
        let rows: Vec<Vec<String>> = r
            .certs
            .iter()
            .map(|c| {
                let left = |ms: u64| {
                    let days = (ms as i64 - now_ms as i64) / 86_400_000;
                    format!("{} ({days}d)", utc(ms))
                };
                let mut status = c.status.clone();
                if c.renew_requested {
                    status.push_str(", renewal asked for");
                }
                if let Some(e) = &c.last_error {
                    status.push_str(&format!("; {} failed order(s), last: {e}", c.failures));
                }
                if let Some(next) = c.next_attempt_ms {
                    status.push_str(&format!("; next attempt {}", utc(next)));
                }
                vec![
                    c.hosts.join(","),
                    c.source.clone(),
                    if c.names.is_empty() { "-".into() } else { c.names.join(",") },
                    c.not_after_ms.map_or("-".into(), left),
                    c.renew_at_ms.map_or("-".into(), utc),
                    status,
                ]
            })
            .collect();
        out.push_str(&table(&["HOSTS", "SOURCE", "NAMES", "EXPIRES", "RENEWS", "STATUS"], &rows));
    }
    let ca = if r.acme_custom_ca { " (with its own root CA)" } else { "" };
    let email = r.acme_email.as_deref().map(|e| format!(", contact {e}")).unwrap_or_default();
    let _ = writeln!(out, "\nACME certificates are ordered from {}{ca}{email}", r.acme_directory);
    out
}

/// `holdfast routes`: routes, edges, then counters per route summed over the nodes and
/// per node.
pub fn routes(r: &holdfast_api::types::RoutesResponse) -> String {
    let mut out = String::new();
    if r.routes.is_empty() {
        out.push_str("no routes deployed\n");
    } else {
        let rows: Vec<Vec<String>> = r
            .routes
            .iter()
            .map(|x| {
                vec![
                    format!("{}{}", x.host, x.path),
                    format!("{}:{}", x.service, x.port),
                    x.tls.clone(),
                    if x.https_redirect { "yes".into() } else { "-".into() },
                    format!("{}s", x.timeout_ms as f64 / 1000.0),
                ]
            })
            .collect();
        out.push_str(&table(&["ROUTE", "SERVICE", "TLS", "REDIRECT", "TIMEOUT"], &rows));
    }
    out.push('\n');
    if r.edges.is_empty() {
        out.push_str("no edge nodes (start one with `holdfast up --edge --public-address IP`)\n");
    } else {
        let rows: Vec<Vec<String>> = r
            .edges
            .iter()
            .map(|e| {
                let dns = if e.dns_port == 0 { "-".to_string() } else { e.dns_port.to_string() };
                vec![
                    e.node.clone(),
                    e.public_address.clone(),
                    e.http_port.to_string(),
                    e.https_port.to_string(),
                    dns,
                    if e.live { "yes".into() } else { "no".into() },
                ]
            })
            .collect();
        out.push_str(&table(&["EDGE", "PUBLIC ADDRESS", "HTTP", "HTTPS", "DNS", "IN DNS"], &rows));
        let _ = writeln!(
            out,
            "(as {} sees the edges{})",
            r.seen_by,
            if r.failing_open { "; none answers its probes, so DNS fails open and answers every edge" } else { "" }
        );
    }
    let mut rows = Vec::new();
    for n in &r.nodes {
        for c in n.routes.iter().filter(|c| c.requests > 0) {
            let mean = c.latency_us_sum as f64 / c.requests as f64 / 1000.0;
            rows.push(vec![
                c.route.clone(),
                n.node.clone(),
                c.requests.to_string(),
                c.http_2xx.to_string(),
                c.http_3xx.to_string(),
                c.http_4xx.to_string(),
                c.http_5xx.to_string(),
                c.retries.to_string(),
                c.timeouts.to_string(),
                format!("{mean:.1}ms"),
            ]);
        }
    }
    out.push('\n');
    if rows.is_empty() {
        out.push_str("no requests counted yet\n");
    } else {
        out.push_str(&table(
            &["ROUTE", "NODE", "REQUESTS", "2XX", "3XX", "4XX", "5XX", "RETRIES", "TIMEOUTS", "MEAN"],
            &rows,
        ));
    }
    for u in &r.unreachable {
        let _ = writeln!(out, "counters not read from {u}");
    }
    out
}

/// `+ service web`, `~ service api [replicas: 2 -> 3]`, `- route ...`.
pub fn change_line(c: &Change) -> String {
    let sign = match c.kind {
        ChangeKind::Create => "+",
        ChangeKind::Update => "~",
        ChangeKind::Delete => "-",
        ChangeKind::Unchanged => "=",
    };
    let mut s = format!("  {sign} {}", c.target);
    if !c.details.is_empty() {
        let _ = write!(s, "  ({})", c.details.join("; "));
    }
    if c.kind == ChangeKind::Update {
        s.push_str(if c.replaces_instances {
            "  [instances replaced one by one]"
        } else {
            "  [running instances kept]"
        });
    }
    s
}

pub fn plan(project: &str, p: &Plan) -> String {
    let mut out = format!("Plan for project {project}:\n");
    for c in &p.changes {
        out.push_str(&change_line(c));
        out.push('\n');
    }
    out
}

fn ago(now_ms: u64, then_ms: u64) -> String {
    let s = now_ms.saturating_sub(then_ms) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

fn mem(bytes: Option<u64>) -> String {
    bytes.map(|b| format!("{:.1}Mi", b as f64 / 1048576.0)).unwrap_or_else(|| "-".into())
}

pub fn status(st: &StatusResponse, now_ms: u64) -> String {
    let mut out = String::new();
    let cp = &st.control_plane;
    let _ = writeln!(
        out,
        "node {} ({}) at {} · control plane: {} (term {}, {} voter{}) · revision {}",
        st.node.name,
        st.node.id,
        st.node.addr,
        cp.role,
        cp.term,
        cp.voters,
        if cp.voters == 1 { "" } else { "s" },
        cp.revision
    );
    if st.services.is_empty() {
        out.push_str("\nNo services deployed. Deploy some with `holdfast deploy holdfast.yaml`.\n");
    } else {
        out.push('\n');
        let rows: Vec<Vec<String>> = st
            .services
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.project.clone(),
                    format!("{}/{}", s.ready, s.replicas),
                    s.generation.to_string(),
                    s.ports.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(","),
                ]
            })
            .collect();
        out.push_str(&table(&["SERVICE", "PROJECT", "READY", "GEN", "PORTS"], &rows));
        for s in st.services.iter().filter(|s| s.rollout.is_some()) {
            let _ = writeln!(out, "  {}: {}", s.name, s.rollout.as_deref().unwrap_or(""));
        }
        out.push('\n');
        let mut rows = Vec::new();
        for s in &st.services {
            for i in &s.instances {
                rows.push(vec![
                    i.name.clone(),
                    i.node.clone(),
                    i.state.clone(),
                    i.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                    i.restarts.to_string(),
                    i.ports.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(","),
                    i.started_at_ms.map(|t| ago(now_ms, t)).unwrap_or_else(|| "-".into()),
                    mem(i.memory_bytes),
                    match (&i.last_exit, &i.last_health_error) {
                        (_, Some(h)) if !i.ready => format!("health: {h}"),
                        (Some(e), _) => e.description.clone(),
                        _ => "-".into(),
                    },
                ]);
            }
        }
        out.push_str(&table(
            &["INSTANCE", "NODE", "STATE", "PID", "RESTARTS", "LISTEN", "UP", "MEM", "LAST EVENT"],
            &rows,
        ));
    }
    if !st.routes.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> = st
            .routes
            .iter()
            .map(|r| vec![format!("{}{}", r.host, r.path), format!("{}:{}", r.service, r.port)])
            .collect();
        out.push_str(&table(&["ROUTE", "TO"], &rows));
    }
    if !st.warnings.is_empty() {
        out.push_str("\nwarnings:\n");
        for w in &st.warnings {
            let _ = writeln!(out, "  ! {w}");
        }
    }
    out
}

pub fn nodes(r: &NodesResponse) -> String {
    let rows: Vec<Vec<String>> = r
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.addr.clone(),
                n.site.clone(),
                n.arch.clone(),
                match &n.not_voting_because {
                    Some(why) => format!("{} ({why})", n.role),
                    None => n.role.clone(),
                },
                match (n.draining, n.cordoned) {
                    _ if n.removing => format!("{},removing", n.state),
                    (true, _) if n.instances > 0 => format!("{},draining", n.state),
                    (true, _) => format!("{},drained", n.state),
                    (false, true) => format!("{},cordoned", n.state),
                    _ => n.state.clone(),
                },
                n.instances.to_string(),
                format!("{:.1}/{:.1}", n.cpu_reserved_millis as f64 / 1000.0, n.cpu_capacity_millis as f64 / 1000.0),
                format!("{}/{}", mem(Some(n.memory_reserved_bytes)), mem(Some(n.memory_capacity_bytes))),
                user_labels(&n.labels),
            ]
        })
        .collect();
    let mut out =
        table(&["NAME", "ADDRESS", "SITE", "ARCH", "ROLE", "STATE", "INSTANCES", "CPU", "MEMORY", "LABELS"], &rows);
    if !r.warnings.is_empty() {
        out.push_str("\nwarnings:\n");
        for w in &r.warnings {
            let _ = writeln!(out, "  ! {w}");
        }
    }
    out
}

/// `holdfast cluster settings`.
pub fn settings(s: &holdfast_api::types::SettingsView) -> String {
    let ms = |v: u64| if v.is_multiple_of(1000) { format!("{}s", v / 1000) } else { format!("{v}ms") };
    let rows = [
        ("heartbeat", ms(s.heartbeat_ms), "how often every node reports to the leader"),
        ("suspect-after", ms(s.suspect_after_ms), "silence before a node is shown as suspect"),
        ("down-after", ms(s.down_after_ms), "silence before a node is down and its replicas move"),
        ("voter-replace-after", ms(s.voter_replace_after_ms), "down time before a Raft voter is replaced"),
        ("promote-after", ms(s.promote_after_ms), "alive and caught up before a new member votes"),
    ];
    let mut out = String::new();
    for (name, value, what) in rows {
        out.push_str(&format!("{name:<21} {value:>7}   {what}\n"));
    }
    out
}

/// The labels users set (the built-ins name, site, arch have their own columns).
fn user_labels(labels: &std::collections::BTreeMap<String, String>) -> String {
    let user: std::collections::BTreeMap<String, String> = labels
        .iter()
        .filter(|(k, _)| !holdfast_state::labels::BUILTIN_LABELS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    holdfast_state::labels::format_labels(&user)
}

/// The answer of `holdfast node label`.
pub fn node_labels(r: &NodeLabelsResponse) -> String {
    let mut out = if r.changed {
        format!("node {} labels: {}\n", r.node, user_labels(&r.labels))
    } else {
        format!("node {} already has these labels: {}\n", r.node, user_labels(&r.labels))
    };
    for m in &r.moves {
        let _ = writeln!(out, "  moved {m}");
    }
    if r.changed && r.moves.is_empty() {
        out.push_str("  no replica had to move\n");
    }
    out
}

/// `holdfast workers`: one row per background loop of a node.
pub fn workers(r: &holdfast_api::types::WorkersResponse) -> String {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let ago = |t: Option<u64>| match t {
        Some(t) => format!("{:.1}s ago", now.saturating_sub(t) as f64 / 1000.0),
        None => "-".to_string(),
    };
    let rows: Vec<Vec<String>> = r
        .workers
        .iter()
        .map(|w| {
            vec![
                w.name.clone(),
                w.state.clone(),
                ago(w.last_run_ms),
                ago(w.last_progress_ms),
                w.consecutive_errors.to_string(),
                match (&w.last_error, w.consecutive_errors) {
                    (Some(e), n) if n > 0 => e.clone(),
                    _ => w.detail.clone(),
                },
            ]
        })
        .collect();
    format!("node {}\n{}", r.node, table(&["WORKER", "STATE", "LAST RUN", "LAST PROGRESS", "ERRORS", "DETAIL"], &rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()], vec!["z".into(), "".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\nz\n");
    }

    #[test]
    fn node_label_answers() {
        let labels = [("arch", "amd64"), ("disk", "ssd"), ("name", "n1"), ("site", "a"), ("zone", "b")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let r = NodeLabelsResponse {
            node: "n1".into(),
            labels,
            changed: true,
            moves: vec!["web-1: n2 -> n1".into()],
            revision: 9,
        };
        assert_eq!(node_labels(&r), "node n1 labels: disk=ssd,zone=b\n  moved web-1: n2 -> n1\n");
        let r = NodeLabelsResponse { changed: false, moves: vec![], ..r };
        assert_eq!(node_labels(&r), "node n1 already has these labels: disk=ssd,zone=b\n");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(ago(100_000, 99_000), "1s");
        assert_eq!(ago(200_000, 0), "3m20s");
        assert_eq!(ago(7_300_000, 0), "2h1m");
    }
}

/// `2026-12-07 06:15:02` (UTC) for milliseconds since the Unix epoch (the agent's log
/// marker timestamp, to the second).
pub fn utc(ms: u64) -> String {
    holdfast_agent::utc_timestamp(ms).chars().take(19).collect::<String>().replacen('T', " ", 1)
}

/// Events as a table: time (UTC), level, kind, subject, message.
pub fn events(events: &[holdfast_api::types::EventView]) -> String {
    if events.is_empty() {
        return String::new();
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            let level = if e.level == "warn" { "WARN" } else { "info" };
            vec![utc(e.at_ms), level.to_string(), e.kind.clone(), e.subject.clone(), e.message.clone()]
        })
        .collect();
    table(&["TIME (UTC)", "LEVEL", "KIND", "SUBJECT", "MESSAGE"], &rows)
}

#[cfg(test)]
mod event_tests {
    #[test]
    fn utc_times() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00");
        assert_eq!(super::utc(1_796_624_102_000), "2026-12-07 06:15:02");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29 00:00:00");
    }
}

/// Millicores as `kubectl top` writes them (`250m`).
fn millis(m: Option<u32>) -> String {
    m.map(|m| format!("{m}m")).unwrap_or_else(|| "-".into())
}

/// `part` as a percentage of `whole`, when both are known.
fn share(part: Option<u64>, whole: Option<u64>) -> String {
    match (part, whole) {
        (Some(p), Some(w)) if w > 0 => format!("{}%", p * 100 / w),
        _ => "-".into(),
    }
}

fn sum<T: Copy + Into<u64>>(values: impl Iterator<Item = Option<T>>) -> Option<u64> {
    values.fold(None, |acc, v| match v {
        Some(v) => Some(acc.unwrap_or(0) + v.into()),
        None => acc,
    })
}

/// How `holdfast top` orders rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TopSort {
    Cpu,
    Memory,
    Name,
}

/// `holdfast top`: per service, per node, then per instance: CPU and memory now, over
/// the last hour, and against what the service asked for (its requests are also its
/// cgroup limits).
pub fn top(r: &holdfast_api::types::UsageResponse, sort: TopSort) -> String {
    use std::collections::BTreeMap;
    let mut out = String::new();
    if r.instances.is_empty() {
        out.push_str("no instances are running\n");
    }
    let key = |cpu: Option<u64>, mem: Option<u64>, name: &str| match sort {
        TopSort::Cpu => (std::cmp::Reverse(cpu.unwrap_or(0)), name.to_string()),
        TopSort::Memory => (std::cmp::Reverse(mem.unwrap_or(0)), name.to_string()),
        TopSort::Name => (std::cmp::Reverse(0), name.to_string()),
    };
    let mut by_service: BTreeMap<&str, Vec<&holdfast_api::types::InstanceUsage>> = BTreeMap::new();
    let mut by_node: BTreeMap<&str, Vec<&holdfast_api::types::InstanceUsage>> = BTreeMap::new();
    for i in &r.instances {
        by_service.entry(i.service.as_str()).or_default().push(i);
        by_node.entry(i.node.as_str()).or_default().push(i);
    }
    let group_rows = |groups: BTreeMap<&str, Vec<&holdfast_api::types::InstanceUsage>>, with_requests: bool| {
        let mut rows: Vec<(_, Vec<String>)> = groups
            .into_iter()
            .map(|(name, list)| {
                let cpu = sum(list.iter().map(|i| i.cpu_millis));
                let memory = sum(list.iter().map(|i| i.memory_bytes));
                let cpu_req = sum(list.iter().map(|i| i.cpu_request_millis));
                let mem_req = sum(list.iter().map(|i| i.memory_request_bytes));
                let mut row = vec![name.to_string(), list.len().to_string(), millis(cpu.map(|c| c as u32))];
                if with_requests {
                    row.extend([millis(cpu_req.map(|c| c as u32)), share(cpu, cpu_req)]);
                }
                row.push(mem(memory));
                if with_requests {
                    row.extend([mem(mem_req), share(memory, mem_req)]);
                }
                (key(cpu, memory, name), row)
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows.into_iter().map(|(_, r)| r).collect::<Vec<_>>()
    };
    if !r.instances.is_empty() {
        let header = ["SERVICE", "INSTANCES", "CPU", "CPU REQ", "CPU %REQ", "MEM", "MEM LIMIT", "MEM %LIMIT"];
        out.push_str(&table(&header, &group_rows(by_service, true)));
        out.push('\n');
        out.push_str(&table(&["NODE", "INSTANCES", "CPU", "MEM"], &group_rows(by_node, false)));
        out.push('\n');
        let mut rows: Vec<(_, Vec<String>)> = r
            .instances
            .iter()
            .map(|i| {
                let row = vec![
                    i.instance.clone(),
                    i.node.clone(),
                    millis(i.cpu_millis),
                    millis(i.cpu_avg_millis),
                    millis(i.cpu_peak_millis),
                    millis(i.cpu_request_millis),
                    mem(i.memory_bytes),
                    mem(i.memory_peak_bytes),
                    mem(i.memory_request_bytes),
                    share(i.memory_bytes, i.memory_request_bytes),
                ];
                (key(i.cpu_millis.map(u64::from), i.memory_bytes, &i.instance), row)
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let header = [
            "INSTANCE",
            "NODE",
            "CPU",
            "CPU AVG 1H",
            "CPU PEAK 1H",
            "CPU REQ",
            "MEM",
            "MEM PEAK 1H",
            "MEM LIMIT",
            "MEM %LIMIT",
        ];
        out.push_str(&table(&header, &rows.into_iter().map(|(_, r)| r).collect::<Vec<_>>()));
    }
    if !r.unreachable.is_empty() {
        let _ = writeln!(out, "\n(not read: {}; their instances are missing)", r.unreachable.join(", "));
    }
    out
}

/// `status`: the last `n` events of each service (its instances' starts, exits, OOM
/// kills, health flaps, moves, rollouts), newest last.
pub fn service_events(st: &StatusResponse, events: &[holdfast_api::types::EventView], n: usize) -> String {
    let mut out = String::new();
    for s in &st.services {
        let subject = format!("service {}", s.name);
        let mine: Vec<&holdfast_api::types::EventView> = events.iter().filter(|e| e.subject == subject).collect();
        if mine.is_empty() {
            continue;
        }
        if out.is_empty() {
            out.push_str("\nrecent events:\n");
        }
        for e in &mine[mine.len().saturating_sub(n)..] {
            let _ = writeln!(out, "  {:<12} {} {:<16} {}", s.name, utc(e.at_ms), e.kind, e.message);
        }
    }
    out
}
