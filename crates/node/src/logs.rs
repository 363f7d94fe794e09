//! Reading instance logs for the API: the last lines of each instance's file, then
//! (with follow) new lines as they are written, surviving rotation (the agent rotates by
//! copy-then-truncate, so a shrinking file means "start again from the top").
use std::convert::Infallible;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio_util::sync::CancellationToken;

/// The last `n` lines of `path` (and of its first rotated file when the current one is
/// shorter), without reading more than the tail of a big file.
pub fn tail_lines(path: &Path, n: usize) -> Vec<String> {
    if n == 0 {
        return Vec::new();
    }
    let mut lines = read_tail(path, n);
    if lines.len() < n {
        let mut older = read_tail(&rotated(path), n - lines.len());
        older.append(&mut lines);
        lines = older;
    }
    lines
}

fn rotated(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

fn read_tail(path: &Path, n: usize) -> Vec<String> {
    let Ok(mut f) = std::fs::File::open(path) else { return Vec::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    // Read a window big enough for n typical lines; grow if needed.
    let mut window = (n as u64 * 256).max(4096);
    loop {
        let start = len.saturating_sub(window);
        if f.seek(SeekFrom::Start(start)).is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() {
            return Vec::new();
        }
        let text = String::from_utf8_lossy(&buf);
        let mut lines: Vec<&str> = text.lines().collect();
        if start > 0 && !lines.is_empty() {
            lines.remove(0); // partial first line
        }
        if lines.len() >= n || start == 0 {
            let skip = lines.len().saturating_sub(n);
            return lines[skip..].iter().map(|l| l.to_string()).collect();
        }
        window *= 4;
    }
}

/// A stream of `instance | line` chunks for the given (instance, file) pairs.
pub fn stream(
    files: Vec<(String, PathBuf)>,
    tail: usize,
    follow: bool,
    shutdown: CancellationToken,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    tokio::spawn(async move {
        let width = files.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        let mut offsets = Vec::new();
        for (name, path) in &files {
            let mut chunk = String::new();
            for line in tail_lines(path, tail) {
                chunk.push_str(&format!("{name:<width$} | {line}\n"));
            }
            if !chunk.is_empty() && tx.send(Bytes::from(chunk)).await.is_err() {
                return;
            }
            offsets.push(std::fs::metadata(path).map(|m| m.len()).unwrap_or(0));
        }
        if !follow {
            return;
        }
        let mut partial: Vec<String> = vec![String::new(); files.len()];
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tx.closed() => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
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
                let mut chunk = String::new();
                while let Some(pos) = partial[i].find('\n') {
                    let line: String = partial[i].drain(..=pos).collect();
                    chunk.push_str(&format!("{name:<width$} | {line}"));
                }
                if !chunk.is_empty() && tx.send(Bytes::from(chunk)).await.is_err() {
                    return;
                }
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok(b), rx)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_reads_only_the_last_lines_across_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("web-0.log");
        std::fs::write(rotated(&p), "a\nb\nc\n").expect("write");
        std::fs::write(&p, "d\ne\n").expect("write");
        assert_eq!(tail_lines(&p, 3), vec!["c", "d", "e"]);
        assert_eq!(tail_lines(&p, 1), vec!["e"]);
        assert!(tail_lines(&p, 0).is_empty());
        let big: String = (0..10_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, big).expect("write");
        assert_eq!(tail_lines(&p, 2), vec!["line 9998", "line 9999"]);
        assert!(tail_lines(&dir.path().join("missing.log"), 5).is_empty());
    }
}
