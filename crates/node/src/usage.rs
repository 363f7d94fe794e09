//! The usage sampler (thin runner): every `SAMPLE_EVERY_MS` it reads each running
//! instance's CPU and memory from the agent and records them in the node's
//! [`UsageHistory`] (pure, bounded rings; `holdfast-agent::usage`). `api/usage.rs` reads it.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holdfast_agent::usage::{UsageHistory, SAMPLE_EVERY_MS};
use tokio_util::sync::CancellationToken;

use crate::peer::now_ms;
use crate::workers::Pass;
use crate::NodeContext;

/// The node's history, shared with the API.
pub type SharedUsage = Arc<Mutex<UsageHistory>>;

/// Samples until `stop`.
pub async fn run(ctx: NodeContext, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(SAMPLE_EVERY_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let agent = ctx.agent.clone();
        let pass = match tokio::task::spawn_blocking(move || agent.usage()).await {
            Ok(readings) => {
                let readings: Vec<_> = readings.into_iter().map(|(id, r)| (id.to_string(), r)).collect();
                let n = readings.len();
                ctx.usage.lock().unwrap_or_else(|e| e.into_inner()).record(now_ms(), &readings);
                if n == 0 {
                    Pass::Idle("no instances running here")
                } else {
                    Pass::Steady
                }
            }
            Err(e) => Pass::Error(format!("reading usage: {e}")),
        };
        ctx.workers.report("usage sampler", pass);
    }
}
