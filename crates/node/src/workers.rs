//! What each background loop of this node is doing: last pass, last progress, last
//! error, errors in a row. Loops report here after every pass; `holdfast workers` and
//! `status` read it.
//!
//! An error is logged where it is handled, once: WARN when a loop starts failing (or
//! fails differently), INFO when it recovers — never again on every pass.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::peer::now_ms;
use holdfast_api::types::WorkerView;

/// The outcome of one pass of a loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pass {
    /// Nothing to do (or not this node's job right now, e.g. a leader duty on a follower).
    Idle(&'static str),
    /// Did something; what, in a few words.
    Progress(String),
    /// Looked and found everything as it should be.
    Steady,
    Error(String),
}

/// Errors in a row after which a failing loop shows in `status`.
pub const FAILING_AFTER: u32 = 3;

/// The registry of this node's loops (cheap to clone).
#[derive(Clone, Default)]
pub struct Workers(Arc<Mutex<BTreeMap<&'static str, WorkerView>>>);

impl Workers {
    /// Records one pass of `name`.
    pub fn report(&self, name: &'static str, pass: Pass) {
        let now = now_ms();
        let Ok(mut all) = self.0.lock() else { return };
        let w = all.entry(name).or_insert_with(|| WorkerView { name: name.to_string(), ..Default::default() });
        w.runs += 1;
        w.last_run_ms = Some(now);
        match pass {
            Pass::Error(e) => {
                if w.last_error.as_deref() != Some(e.as_str()) || w.consecutive_errors == 0 {
                    tracing::warn!(worker = name, error = %e, "background loop failed; it retries");
                }
                w.consecutive_errors += 1;
                w.last_error = Some(e);
                w.last_error_ms = Some(now);
                w.state = "failing".into();
            }
            other => {
                if w.consecutive_errors > 0 {
                    tracing::info!(worker = name, errors = w.consecutive_errors, "background loop works again");
                }
                w.consecutive_errors = 0;
                match other {
                    Pass::Idle(why) => {
                        w.state = "idle".into();
                        w.detail = why.to_string();
                    }
                    Pass::Progress(what) => {
                        w.state = "running".into();
                        w.last_progress_ms = Some(now);
                        w.detail = what;
                    }
                    _ => {
                        w.state = "running".into();
                        w.detail = "steady".into();
                    }
                }
            }
        }
    }

    /// Every loop, by name.
    pub fn views(&self) -> Vec<WorkerView> {
        self.0.lock().map(|all| all.values().cloned().collect()).unwrap_or_default()
    }

    /// One line per loop that failed [`FAILING_AFTER`] times in a row, for `status`.
    pub fn warnings(&self) -> Vec<String> {
        self.views()
            .into_iter()
            .filter(|w| w.consecutive_errors >= FAILING_AFTER)
            .map(|w| {
                format!(
                    "background loop `{}` failed {} times in a row: {} (see `holdfast workers`)",
                    w.name,
                    w.consecutive_errors,
                    w.last_error.unwrap_or_default()
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_count_in_a_row_and_show_once_failing() {
        let w = Workers::default();
        w.report("leader duties", Pass::Error("no quorum".into()));
        w.report("leader duties", Pass::Error("no quorum".into()));
        assert!(w.warnings().is_empty());
        w.report("leader duties", Pass::Error("no quorum".into()));
        assert_eq!(
            w.warnings(),
            ["background loop `leader duties` failed 3 times in a row: no quorum (see `holdfast workers`)"]
        );
        w.report("leader duties", Pass::Progress("n2 down".into()));
        let v = &w.views()[0];
        assert_eq!((v.consecutive_errors, v.state.as_str(), v.detail.as_str(), v.runs), (0, "running", "n2 down", 4));
        assert_eq!(v.last_error.as_deref(), Some("no quorum"), "the last error stays visible");
        assert!(w.warnings().is_empty());
        w.report("leader duties", Pass::Idle("not the leader"));
        assert_eq!(w.views()[0].state, "idle");
    }
}
