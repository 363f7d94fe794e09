//! The access log of the ingress: one line per request, written by a background task so a
//! request never waits for the disk. Lines are dropped (and counted) when the writer falls
//! more than [`QUEUE`] lines behind; the file is rotated to `<file>.1` past [`ROTATE_BYTES`].
//!
//! A line (fields separated by one space, the request line quoted):
//! `2026-12-07T14:03:11.123Z 203.0.113.7 https h2 shop.example "GET /api/x" 200 3.2ms route=shop.example/api service=web instance=web-1`
//! (`route=-` and friends when no route matched).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Lines that may wait for the writer.
pub(crate) const QUEUE: usize = 16_384;
/// Size past which the file is rotated (one old file kept).
pub(crate) const ROTATE_BYTES: u64 = 64 << 20;

/// What one request did, as the log line shows it.
pub(crate) struct Entry<'a> {
    pub client: &'a str,
    pub scheme: &'static str,
    pub version: &'static str,
    pub host: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub elapsed: Duration,
    pub route: Option<&'a str>,
    pub service: Option<&'a str>,
    pub instance: Option<&'a str>,
}

/// The sending side; cheap to clone.
#[derive(Clone)]
pub(crate) struct AccessLog {
    tx: mpsc::Sender<String>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Starts the writer task appending to `path` (its directory is created).
    pub fn start(path: PathBuf) -> AccessLog {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_loop(path, rx));
        AccessLog { tx, dropped: Arc::default() }
    }

    pub fn log(&self, entry: &Entry<'_>) {
        if self.tx.try_send(format_line(SystemTime::now(), entry)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines dropped because the writer was behind (or had failed).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// One line, with its newline (pure).
pub(crate) fn format_line(now: SystemTime, e: &Entry<'_>) -> String {
    let mut line = String::with_capacity(160);
    write_time(&mut line, now);
    let clean = |s: &str| -> String {
        s.chars().map(|c| if c.is_ascii_graphic() && c != '"' { c } else { '_' }).collect::<String>()
    };
    let host = if e.host.is_empty() { "-".to_string() } else { clean(e.host) };
    let _ = write!(
        line,
        " {} {} {} {} \"{} {}\" {} {:.1}ms route={} service={} instance={}",
        e.client,
        e.scheme,
        e.version,
        host,
        clean(e.method),
        clean(e.path),
        e.status,
        e.elapsed.as_secs_f64() * 1000.0,
        e.route.map_or_else(|| "-".to_string(), clean),
        e.service.map_or_else(|| "-".to_string(), clean),
        e.instance.map_or_else(|| "-".to_string(), clean),
    );
    line.push('\n');
    line
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-12-07T14:03:11.123Z`.
fn write_time(out: &mut String, now: SystemTime) {
    let ms = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    let (h, min, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
    let _ = write!(out, "{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z");
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

async fn open(path: &PathBuf) -> std::io::Result<(tokio::fs::File, u64)> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let file = tokio::fs::OpenOptions::new().create(true).append(true).open(path).await?;
    let len = file.metadata().await?.len();
    Ok((file, len))
}

async fn write_loop(path: PathBuf, mut rx: mpsc::Receiver<String>) {
    let (mut file, mut len) = match open(&path).await {
        Ok(f) => f,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "access log: cannot open; requests are not logged");
            return; // the channel closes: every line counts as dropped
        }
    };
    let mut batch = Vec::with_capacity(64 << 10);
    while let Some(line) = rx.recv().await {
        batch.extend_from_slice(line.as_bytes());
        while batch.len() < (64 << 10) {
            match rx.try_recv() {
                Ok(line) => batch.extend_from_slice(line.as_bytes()),
                Err(_) => break,
            }
        }
        if let Err(error) = file.write_all(&batch).await {
            tracing::warn!(path = %path.display(), %error, "access log: write failed");
        }
        len += batch.len() as u64;
        batch.clear();
        if len > ROTATE_BYTES {
            let _ = file.flush().await;
            let old = path.with_extension("log.1");
            if let Err(error) = tokio::fs::rename(&path, &old).await {
                tracing::warn!(path = %path.display(), %error, "access log: cannot rotate");
            }
            match open(&path).await {
                Ok((f, l)) => (file, len) = (f, l),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "access log: cannot reopen after rotation");
                    return;
                }
            }
        }
    }
    let _ = file.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format() {
        let e = Entry {
            client: "203.0.113.7",
            scheme: "https",
            version: "h2",
            host: "shop.example",
            method: "GET",
            path: "/api/x y\"z",
            status: 200,
            elapsed: Duration::from_micros(3_240),
            route: Some("shop.example/api"),
            service: Some("web"),
            instance: Some("web-1"),
        };
        let at = UNIX_EPOCH + Duration::from_millis(1_796_652_191_123);
        assert_eq!(
            format_line(at, &e),
            "2026-12-07T14:03:11.123Z 203.0.113.7 https h2 shop.example \"GET /api/x_y_z\" 200 3.2ms route=shop.example/api service=web instance=web-1\n"
        );
        let none = Entry { host: "", route: None, service: None, instance: None, status: 404, ..e };
        assert!(format_line(UNIX_EPOCH, &none).starts_with("1970-01-01T00:00:00.000Z 203.0.113.7 https h2 - "));
        assert!(format_line(UNIX_EPOCH, &none).ends_with(" 404 3.2ms route=- service=- instance=-\n"));
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_794), (2026, 12, 7));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}
