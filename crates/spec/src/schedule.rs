//! Job schedules: cron expressions (croner; 5 fields, or 6 with seconds first, and the
//! `@hourly`-style aliases), evaluated in UTC, and `every:` intervals aligned to the Unix
//! epoch — so every leader computes the same slots for a job, whichever node it is.
use serde::{Deserialize, Serialize};

/// When a job runs by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobSchedule {
    /// A cron expression, in UTC.
    Cron(String),
    /// Every this many milliseconds, at multiples of it since the Unix epoch.
    EveryMs(u64),
}

const NAMES5: [&str; 5] = ["minute", "hour", "day of month", "month", "day of week"];
const NAMES6: [&str; 6] = ["second", "minute", "hour", "day of month", "month", "day of week"];
const RANGES5: [&str; 5] = ["0-59", "0-23", "1-31", "1-12 or JAN-DEC", "0-7 or SUN-SAT"];
const RANGES6: [&str; 6] = ["0-59", "0-59", "0-23", "1-31", "1-12 or JAN-DEC", "0-7 or SUN-SAT"];

fn parser() -> croner::parser::CronParser {
    croner::parser::CronParser::new()
}

/// Parses a cron expression; an error names the field that is wrong.
pub fn check_cron(expr: &str) -> Result<(), String> {
    let Err(whole) = parser().parse(expr) else { return Ok(()) };
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if expr.trim().starts_with('@') || !(5..=6).contains(&fields.len()) {
        return Err(format!(
            "invalid cron expression `{}`: give 5 fields (minute hour day-of-month month day-of-week, e.g. `0 3 */13 * *`), 6 with seconds first, or @hourly/@daily/@weekly/@monthly/@yearly ({whole})",
            expr.escape_debug()
        ));
    }
    let (names, ranges): (&[&str], &[&str]) = if fields.len() == 5 { (&NAMES5, &RANGES5) } else { (&NAMES6, &RANGES6) };
    for (i, field) in fields.iter().enumerate() {
        let probe: Vec<&str> = (0..fields.len()).map(|j| if i == j { *field } else { "*" }).collect();
        if let Err(e) = parser().parse(&probe.join(" ")) {
            return Err(format!(
                "invalid cron expression `{}`: field {} ({}) `{}` is not valid: {} (valid: {}, `*`, lists `a,b`, ranges `a-b`, steps `*/n`)",
                expr.escape_debug(),
                i + 1,
                names[i],
                field.escape_debug(),
                describe(&e),
                ranges[i]
            ));
        }
    }
    Err(format!("invalid cron expression `{}`: {}", expr.escape_debug(), describe(&whole)))
}

fn describe(e: &croner::errors::CronError) -> String {
    use croner::errors::CronError as E;
    match e {
        E::ComponentError(m) | E::InvalidPattern(m) | E::IllegalCharacters(m) => m.trim_end_matches('.').to_lowercase(),
        other => other.to_string(),
    }
}

/// `2026-12-07 03:00:00 UTC` for milliseconds since the epoch.
pub fn format_utc_ms(ms: u64) -> String {
    at(ms).map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or_else(|| format!("{ms} ms"))
}

fn at(ms: u64) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp_millis(i64::try_from(ms).ok()?)
}

fn ms_of(t: chrono::DateTime<chrono::Utc>) -> Option<u64> {
    u64::try_from(t.timestamp_millis()).ok()
}

impl JobSchedule {
    /// The first slot strictly after `after_ms` (ms since the epoch, UTC).
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        match self {
            JobSchedule::EveryMs(0) => None,
            JobSchedule::EveryMs(every) => Some((after_ms / every + 1) * every),
            JobSchedule::Cron(expr) => {
                let cron = parser().parse(expr).ok()?;
                ms_of(cron.find_next_occurrence(&at(after_ms)?, false).ok()?)
            }
        }
    }

    /// The last slot at or before `now_ms`.
    pub fn latest_at_or_before(&self, now_ms: u64) -> Option<u64> {
        match self {
            JobSchedule::EveryMs(0) => None,
            JobSchedule::EveryMs(every) => Some(now_ms / every * every),
            JobSchedule::Cron(expr) => {
                let cron = parser().parse(expr).ok()?;
                ms_of(cron.find_previous_occurrence(&at(now_ms)?, true).ok()?)
            }
        }
    }

    /// For people: `cron 0 3 */13 * * (UTC)`, `every 6h`.
    pub fn describe(&self) -> String {
        match self {
            JobSchedule::Cron(e) => format!("cron {e} (UTC)"),
            JobSchedule::EveryMs(ms) => format!("every {}", crate::units::format_duration_ms(*ms)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_field() {
        assert_eq!(check_cron("0 3 */13 * *"), Ok(()));
        assert_eq!(check_cron("*/2 * * * * *"), Ok(()));
        assert_eq!(check_cron("@hourly"), Ok(()));
        assert_eq!(
            check_cron("61 * * * *").unwrap_err(),
            "invalid cron expression `61 * * * *`: field 1 (minute) `61` is not valid: number out of bounds (valid: 0-59, `*`, lists `a,b`, ranges `a-b`, steps `*/n`)"
        );
        assert!(check_cron("0 25 * * *").unwrap_err().contains("field 2 (hour) `25`"));
        assert!(check_cron("0 0 32 * *").unwrap_err().contains("field 3 (day of month) `32`"));
        assert!(check_cron("0 0 * FOO *").unwrap_err().contains("field 4 (month) `FOO`"));
        assert!(check_cron("* * * *").unwrap_err().starts_with("invalid cron expression `* * * *`: give 5 fields"));
    }

    #[test]
    fn slots_are_the_same_for_everyone() {
        let every = JobSchedule::EveryMs(3_000);
        assert_eq!(every.next_after(10_000), Some(12_000));
        assert_eq!(every.next_after(12_000), Some(15_000));
        assert_eq!(every.latest_at_or_before(14_999), Some(12_000));
        let cron = JobSchedule::Cron("0 3 */13 * *".into());
        // 2026-12-07T12:00:00Z
        let now = 1_796_644_800_000;
        let next = cron.next_after(now).unwrap();
        assert_eq!(
            chrono::DateTime::from_timestamp_millis(next as i64).unwrap().to_rfc3339(),
            "2026-12-14T03:00:00+00:00"
        );
        let prev = cron.latest_at_or_before(now).unwrap();
        assert_eq!(
            chrono::DateTime::from_timestamp_millis(prev as i64).unwrap().to_rfc3339(),
            "2026-12-01T03:00:00+00:00"
        );
        assert_eq!(cron.latest_at_or_before(prev), Some(prev), "a slot is at or before itself");
    }
}
