//! Instance log files: opening them for a child (O_APPEND, so the process
//! writes directly and logging survives the agent), agent marker lines,
//! copy-then-truncate rotation, and the time index that dates each line.
//!
//! The child writes its output straight into the file, so lines carry no time of
//! their own. Once a second the agent appends a checkpoint `<size> <unix ms>` to
//! `<log>.idx` when the file grew: a line is dated by the first checkpoint at or
//! past its end (within a second of when it was written; the newest lines by the
//! file's modification time), and the agent's own marker lines by their stamp.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// `path` with `.n` appended (`web-0.log.1`).
pub(crate) fn rotated_path(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Opens (creating) a log file for appending. The same open file is handed
/// to the child as stdout and stderr.
pub(crate) fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o640).open(path)
}

/// Appends `--- holdfast: <msg>` to the log. Errors are only traced: a
/// marker must never stop supervision.
pub(crate) fn marker(path: &Path, msg: &str) {
    let line = format!("--- holdfast: {msg} [{}]\n", utc_timestamp(crate::types::now_ms()));
    let res = open_append(path).and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = res {
        tracing::warn!(path = %path.display(), error = %e, "cannot write log marker");
    }
}

/// The time index of a log file (`web-0.log.idx`, `web-0.log.1.idx`).
pub(crate) fn index_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".idx");
    PathBuf::from(s)
}

/// Appends a checkpoint `<size> <at_ms>` to `path`'s index when the file is larger
/// than `last` (the size at the previous checkpoint); returns the size now.
pub(crate) fn checkpoint(path: &Path, last: u64, at_ms: u64) -> io::Result<u64> {
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    if len > last {
        open_append(&index_path(path))?.write_all(format!("{len} {at_ms}\n").as_bytes())?;
    }
    Ok(len)
}

/// The size at the newest checkpoint of `path`'s index (0 without one).
pub(crate) fn last_checkpoint(path: &Path) -> u64 {
    load_index(path).last().map_or(0, |(offset, _)| *offset)
}

/// The checkpoints of `path`'s index, by offset (torn or foreign lines skipped).
fn load_index(path: &Path) -> Vec<(u64, u64)> {
    let text = std::fs::read_to_string(index_path(path)).unwrap_or_default();
    let mut out: Vec<(u64, u64)> = text
        .lines()
        .filter_map(|l| {
            let (a, b) = l.split_once(' ')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect();
    out.sort_unstable();
    out
}

/// Rotates `path` if it is larger than `max_bytes`: `.{keep-1}` -> `.{keep}`,
/// ..., `.1` -> `.2`, then the current content is copied to `.1` and the file
/// truncated in place (writers hold it open with O_APPEND, so they continue
/// at the new end). With `keep == 0` the file is just truncated. Lines
/// written between the copy and the truncate are lost (as with logrotate's
/// copytruncate). Returns whether it rotated.
pub(crate) fn rotate_if_needed(path: &Path, max_bytes: u64, keep: usize) -> io::Result<bool> {
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if len <= max_bytes {
        return Ok(false);
    }
    if keep > 0 {
        for n in (1..keep).rev() {
            let from = rotated_path(path, n);
            if from.exists() {
                std::fs::rename(&from, rotated_path(path, n + 1))?;
            }
            let from_index = index_path(&from);
            if from_index.exists() {
                std::fs::rename(&from_index, index_path(&rotated_path(path, n + 1)))?;
            }
        }
        std::fs::copy(path, rotated_path(path, 1))?;
        // Date the copy's last lines, then its index goes with it.
        let first = rotated_path(path, 1);
        checkpoint(&first, last_checkpoint(path), crate::types::now_ms())?;
        let index = index_path(path);
        if index.exists() {
            let mut merged = std::fs::read(&index)?;
            merged.extend(std::fs::read(index_path(&first)).unwrap_or_default());
            std::fs::write(index_path(&first), merged)?;
        }
    }
    OpenOptions::new().write(true).open(path)?.set_len(0)?;
    match std::fs::remove_file(index_path(path)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    Ok(true)
}

/// One line of an instance's log with the time it was written (unix ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedLine {
    pub at_ms: u64,
    pub line: String,
}

/// What to read of a log: lines written at or after `since_ms`, that `keep` accepts,
/// the last `tail` of them (all when `None`).
pub struct LogQuery<'a> {
    pub since_ms: Option<u64>,
    pub tail: Option<usize>,
    pub keep: Option<&'a dyn Fn(&str) -> bool>,
}

/// The time of `line` from an agent marker's stamp (`--- holdfast: ... [<utc>]`).
fn marker_time(line: &str) -> Option<u64> {
    let stamp = line.strip_prefix("--- holdfast: ")?.strip_suffix(']')?.rsplit_once('[')?.1;
    parse_utc_timestamp(stamp)
}

/// The lines of one file from `start` (a line cut by `start` is dropped), each dated
/// by the index.
fn dated_lines(path: &Path, start: u64) -> Vec<TimedLine> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = File::open(path) else { return Vec::new() };
    let mtime = f
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or_else(crate::types::now_ms, |d| d.as_millis() as u64);
    // From the byte before `start`: when that is a newline, the dropped "first line"
    // is just it, and the line at `start` is kept whole.
    let from = start.saturating_sub(1);
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(from)).is_err() || f.read_to_end(&mut buf).is_err() {
        return Vec::new();
    }
    let index = load_index(path);
    let mut out = Vec::new();
    let mut pos = from;
    let mut first = start > 0;
    for chunk in buf.split_inclusive(|b| *b == b'\n') {
        pos += chunk.len() as u64;
        if std::mem::take(&mut first) {
            continue;
        }
        let line = String::from_utf8_lossy(chunk).trim_end_matches(['\n', '\r']).to_string();
        let at_ms = marker_time(&line).unwrap_or_else(|| {
            let i = index.partition_point(|(offset, _)| *offset < pos);
            index.get(i).map_or(mtime, |(_, at)| *at)
        });
        out.push(TimedLine { at_ms, line });
    }
    out
}

/// Where to start reading `path` for lines at or after `since_ms`: the newest
/// checkpoint before it (0 when there is none).
fn start_for(path: &Path, since_ms: u64) -> u64 {
    load_index(path).iter().filter(|(_, at)| *at < since_ms).map(|(offset, _)| *offset).max().unwrap_or(0)
}

/// Reads an instance's log (the current file and its first rotated one) as `q` asks,
/// oldest first.
pub fn read_log(path: &Path, q: &LogQuery<'_>) -> Vec<TimedLine> {
    let wanted = |l: &TimedLine| q.since_ms.is_none_or(|s| l.at_ms >= s) && q.keep.is_none_or(|k| k(&l.line));
    let read = |p: &Path| -> Vec<TimedLine> {
        let len = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let start = match (q.since_ms, q.tail, q.keep.is_some()) {
            (Some(since), _, _) => start_for(p, since),
            // The last lines only: a window large enough for them, whole if too short.
            (None, Some(n), false) => len.saturating_sub((n as u64 * 512).max(64 * 1024)),
            _ => 0,
        };
        let mut lines: Vec<TimedLine> = dated_lines(p, start).into_iter().filter(wanted).collect();
        if start > 0 && q.tail.is_some_and(|n| lines.len() < n) && q.since_ms.is_none() {
            lines = dated_lines(p, 0).into_iter().filter(wanted).collect();
        }
        lines
    };
    let mut lines = read(path);
    let more = q.since_ms.is_some() || q.tail.is_none_or(|n| lines.len() < n);
    if more {
        let mut older = read(&rotated_path(path, 1));
        older.append(&mut lines);
        lines = older;
    }
    if let Some(n) = q.tail {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    lines
}

/// Parses `YYYY-MM-DDTHH:MM:SS.mmmZ` (what [`utc_timestamp`] writes) back to unix ms.
pub fn parse_utc_timestamp(s: &str) -> Option<u64> {
    let (date, time) = s.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<u64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    let ms: u64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days-from-civil (Howard Hinnant's algorithm), the inverse of utc_timestamp's.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    Some(days * 86_400_000 + hh * 3_600_000 + mm * 60_000 + ss * 1000 + ms)
}

/// Formats unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn utc_timestamp(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, (rem / 60) % 60, rem % 60, ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap_or_default()
    }

    #[test]
    fn timestamp_format() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_timestamp(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(utc_timestamp(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
    }

    #[test]
    fn timestamps_parse_back() {
        for ms in [0, 951_782_400_123, 1_700_000_000_000, 1_796_000_000_999] {
            assert_eq!(parse_utc_timestamp(&utc_timestamp(ms)), Some(ms));
        }
        assert_eq!(parse_utc_timestamp("2026-12-07T16:50:11Z"), Some(1_796_662_211_000));
        for bad in ["", "2026-13-01T00:00:00Z", "2026-12-07 16:50:11Z", "2026-12-07T25:00:00Z", "x"] {
            assert_eq!(parse_utc_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn lines_are_dated_by_the_index_and_markers_by_their_stamp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("web-0.log");
        let mut child = open_append(&log).expect("open");
        writeln!(child, "one").expect("write");
        writeln!(child, "two").expect("write");
        assert_eq!(checkpoint(&log, 0, 1_000).expect("checkpoint"), 8);
        // Nothing new: no checkpoint.
        assert_eq!(checkpoint(&log, 8, 1_500).expect("checkpoint"), 8);
        writeln!(child, "three").expect("write");
        assert_eq!(checkpoint(&log, 8, 2_000).expect("checkpoint"), 14);
        let stamp = utc_timestamp(2_500);
        writeln!(child, "--- holdfast: stopped [{stamp}]").expect("write");
        assert!(checkpoint(&log, 14, 3_000).expect("checkpoint") > 14);
        let all = LogQuery { since_ms: None, tail: None, keep: None };
        let got: Vec<(u64, String)> = read_log(&log, &all).into_iter().map(|l| (l.at_ms, l.line)).collect();
        assert_eq!(
            got,
            vec![
                (1_000, "one".to_string()),
                (1_000, "two".to_string()),
                (2_000, "three".to_string()),
                (2_500, format!("--- holdfast: stopped [{stamp}]")),
            ]
        );
        let since = LogQuery { since_ms: Some(1_500), tail: None, keep: None };
        let got: Vec<String> = read_log(&log, &since).into_iter().map(|l| l.line).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], "three");
        let keep = |l: &str| l.starts_with('t');
        let grep = LogQuery { since_ms: None, tail: Some(1), keep: Some(&keep) };
        let got: Vec<String> = read_log(&log, &grep).into_iter().map(|l| l.line).collect();
        assert_eq!(got, vec!["three"]);
        // Rotation takes the index along: the rotated lines keep their times.
        assert!(rotate_if_needed(&log, 10, 2).expect("rotate"));
        assert!(!index_path(&log).exists());
        writeln!(child, "four").expect("write");
        assert_eq!(checkpoint(&log, 0, 4_000).expect("checkpoint"), 5);
        let got: Vec<(u64, String)> = read_log(&log, &all).into_iter().map(|l| (l.at_ms, l.line)).collect();
        assert_eq!(got.len(), 5);
        assert_eq!(got[0], (1_000, "one".to_string()));
        assert_eq!(got[4], (4_000, "four".to_string()));
        let tail = LogQuery { since_ms: None, tail: Some(2), keep: None };
        let got: Vec<String> = read_log(&log, &tail).into_iter().map(|l| l.line).collect();
        assert_eq!(got, vec![format!("--- holdfast: stopped [{stamp}]"), "four".to_string()]);
    }

    #[test]
    fn rotation_keeps_n_files_newest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("web-0.log");
        // The "child" keeps its append handle across rotations.
        let mut child = open_append(&log).expect("open");
        assert!(!rotate_if_needed(&log, 10, 3).expect("rotate"));
        for round in 1..=5 {
            writeln!(child, "round {round} xxxxxxxxxxxx").expect("write");
            assert!(rotate_if_needed(&log, 10, 3).expect("rotate"), "round {round}");
            assert_eq!(read(&log), "");
        }
        assert_eq!(read(&rotated_path(&log, 1)), "round 5 xxxxxxxxxxxx\n");
        assert_eq!(read(&rotated_path(&log, 2)), "round 4 xxxxxxxxxxxx\n");
        assert_eq!(read(&rotated_path(&log, 3)), "round 3 xxxxxxxxxxxx\n");
        assert!(!rotated_path(&log, 4).exists());
        // The writer continues at the start of the truncated file (O_APPEND).
        writeln!(child, "after").expect("write");
        assert_eq!(read(&log), "after\n");
        // Small files are left alone.
        assert!(!rotate_if_needed(&log, 10, 3).expect("rotate"));
        // Missing files are fine.
        assert!(!rotate_if_needed(&dir.path().join("nope.log"), 1, 3).expect("rotate"));
    }

    #[test]
    fn keep_zero_only_truncates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("a.log");
        std::fs::write(&log, "0123456789abc").expect("write");
        assert!(rotate_if_needed(&log, 5, 0).expect("rotate"));
        assert_eq!(read(&log), "");
        assert!(!rotated_path(&log, 1).exists());
    }

    #[test]
    fn marker_appends_a_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("a.log");
        marker(&log, "started pid 1 (generation 2)");
        marker(&log, "stopped");
        let s = read(&log);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("--- holdfast: started pid 1 (generation 2) ["));
        assert!(lines[1].starts_with("--- holdfast: stopped ["));
    }
}
