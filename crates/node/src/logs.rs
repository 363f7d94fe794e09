//! Reading instance logs for the API: the selected lines of each instance's files (dated
//! by the agent's time index: `holdfast_agent::logs::read_log`), then (with follow) new
//! lines as they are written, surviving rotation (the agent rotates by copy-then-truncate,
//! so a shrinking file means "start again from the top"). Service logs go out as one JSON
//! [`LogItem`] per line (the CLI formats them); a job run's log as `instance | line` text.
use std::convert::Infallible;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use crate::peer::now_ms;
use bytes::Bytes;
use futures::Stream;
use holdfast_agent::logs::{read_log, LogQuery, TimedLine};
use holdfast_api::types::{LogItem, LogLine};
use tokio_util::sync::CancellationToken;

/// Which lines: at or after `since_ms`, matching `grep`, the last `tail` per instance
/// (all when `None`), then new ones when `follow`.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub since_ms: Option<u64>,
    pub tail: Option<usize>,
    pub grep: Option<regex::Regex>,
    pub follow: bool,
}

/// How lines are written to the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `instance | line`, aligned (a job run's log).
    Text,
    /// One [`LogItem`] as JSON per line (service logs).
    Json,
}

/// Writes `lines` (instance, line) in `format`.
fn encode(node: &str, width: usize, format: Format, lines: &[(String, TimedLine)]) -> Bytes {
    let mut out = String::new();
    for (instance, l) in lines {
        match format {
            Format::Text => out.push_str(&format!("{instance:<width$} | {}\n", l.line)),
            Format::Json => {
                let item = LogItem::Line(LogLine {
                    at_ms: Some(l.at_ms),
                    node: node.to_string(),
                    instance: instance.clone(),
                    line: l.line.clone(),
                });
                if let Ok(json) = serde_json::to_string(&item) {
                    out.push_str(&json);
                    out.push('\n');
                }
            }
        }
    }
    Bytes::from(out)
}

/// A stream of the selected lines of the given (instance, file) pairs of node `node`:
/// the history first (oldest first across instances), then, with follow, new lines
/// every 200 ms until the client goes away or the node stops.
pub fn stream(
    node: String,
    files: Vec<(String, PathBuf)>,
    sel: Selection,
    format: Format,
    shutdown: CancellationToken,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    tokio::spawn(async move {
        let width = files.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        let history = {
            let (files, sel) = (files.clone(), sel.clone());
            tokio::task::spawn_blocking(move || {
                let keep = |l: &str| sel.grep.as_ref().is_none_or(|re| re.is_match(l));
                let q = LogQuery { since_ms: sel.since_ms, tail: sel.tail, keep: Some(&keep) };
                let mut all: Vec<(String, TimedLine)> = Vec::new();
                let mut offsets = Vec::new();
                for (name, path) in &files {
                    offsets.push(std::fs::metadata(path).map(|m| m.len()).unwrap_or(0));
                    all.extend(read_log(path, &q).into_iter().map(|l| (name.clone(), l)));
                }
                all.sort_by_key(|(_, l)| l.at_ms);
                (all, offsets)
            })
            .await
        };
        let Ok((lines, mut offsets)) = history else { return };
        for chunk in lines.chunks(500) {
            if tx.send(encode(&node, width, format, chunk)).await.is_err() {
                return;
            }
        }
        if !sel.follow {
            return;
        }
        let mut partial: Vec<String> = vec![String::new(); files.len()];
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tx.closed() => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            let now = now_ms();
            let mut fresh: Vec<(String, TimedLine)> = Vec::new();
            for (i, (name, path)) in files.iter().enumerate() {
                let Ok(mut f) = std::fs::File::open(path) else { continue };
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                if len < offsets[i] {
                    offsets[i] = 0; // rotated: the file was truncated
                }
                if len == offsets[i] || f.seek(SeekFrom::Start(offsets[i])).is_err() {
                    continue;
                }
                let mut buf = Vec::new();
                if f.by_ref().take(1 << 20).read_to_end(&mut buf).is_err() {
                    continue;
                }
                offsets[i] += buf.len() as u64;
                partial[i].push_str(&String::from_utf8_lossy(&buf));
                while let Some(pos) = partial[i].find('\n') {
                    let line: String = partial[i].drain(..=pos).collect();
                    let line = line.trim_end_matches(['\n', '\r']).to_string();
                    if sel.grep.as_ref().is_none_or(|re| re.is_match(&line)) {
                        fresh.push((name.clone(), TimedLine { at_ms: now, line }));
                    }
                }
            }
            if !fresh.is_empty() && tx.send(encode(&node, width, format, &fresh)).await.is_err() {
                return;
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok(b), rx)) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn history_is_merged_by_time_filtered_and_encoded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("web-0.log");
        let b = dir.path().join("web-1.log");
        std::fs::write(&a, "a1\n--- holdfast: started [1970-01-01T00:00:03.000Z]\n").expect("write");
        std::fs::write(&b, "--- holdfast: started [1970-01-01T00:00:02.000Z]\nb2 error\n").expect("write");
        std::fs::write(dir.path().join("web-0.log.idx"), "3 1000\n").expect("write");
        let files = vec![("web-0".to_string(), a.clone()), ("web-1".to_string(), b.clone())];
        let sel = Selection { tail: Some(10), ..Default::default() };
        let out: Vec<Bytes> = stream("n1".into(), files.clone(), sel, Format::Json, CancellationToken::new())
            .map(|r| r.unwrap_or_default())
            .collect()
            .await;
        let text: String = out.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect();
        let items: Vec<LogItem> = text.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
        let lines: Vec<(Option<u64>, &str, &str)> = items
            .iter()
            .filter_map(|i| match i {
                LogItem::Line(l) => Some((l.at_ms, l.instance.as_str(), l.line.as_str())),
                LogItem::Note { .. } => None,
            })
            .collect();
        assert_eq!(lines[0], (Some(1000), "web-0", "a1"));
        assert_eq!(lines[1].0, Some(2000));
        assert_eq!(lines[2].0, Some(3000));
        assert!(items.iter().all(|i| matches!(i, LogItem::Line(l) if l.node == "n1")));
        let sel = Selection { grep: regex::Regex::new("err").ok(), ..Default::default() };
        let out: Vec<Bytes> = stream("n1".into(), files, sel, Format::Text, CancellationToken::new())
            .map(|r| r.unwrap_or_default())
            .collect()
            .await;
        let text: String = out.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect();
        assert_eq!(text, "web-1 | b2 error\n");
    }
}
