//! Instance log files: opening them for a child (O_APPEND, so the process
//! writes directly and logging survives the agent), agent marker lines, and
//! copy-then-truncate rotation.

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
        }
        std::fs::copy(path, rotated_path(path, 1))?;
    }
    OpenOptions::new().write(true).open(path)?.set_len(0)?;
    Ok(true)
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
