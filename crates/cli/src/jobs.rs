//! `holdfast run JOB` (a run now, its log streamed, the run's exit code as ours) and
//! `holdfast jobs [JOB]` (jobs, schedules, next and last runs; one job's run history).
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use holdfast_api::types::{JobView, RunView};

use crate::commands::client;
use crate::output::{table, utc};
use crate::Global;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The job: `migrate`, or `shop/migrate` to say which project it must belong to.
    pub job: String,
    /// Start it and return at once (do not stream its log or wait for its result).
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Args, Debug)]
pub struct JobsArgs {
    /// Show this job's runs (newest first) instead of every job.
    pub job: Option<String>,
}

fn split(job: &str) -> (Option<&str>, &str) {
    match job.split_once('/') {
        Some((p, j)) => (Some(p), j),
        None => (None, job),
    }
}

fn result_of(r: &RunView) -> String {
    let mut s = r.state.clone();
    if let Some(res) = &r.result {
        s.push_str(&format!(": {res}"));
    }
    s
}

pub async fn run(g: &Global, args: RunArgs) -> Result<ExitCode> {
    use http_body_util::BodyExt;
    let (project, job) = split(&args.job);
    let c = client(g)?;
    if let Some(p) = project {
        let h = c.job(job).await?;
        if h.job.project != p {
            bail!("job `{job}` belongs to project `{}`, not `{p}`", h.job.project);
        }
    }
    let started = c.run_job(job).await?;
    if g.json && args.no_wait {
        println!("{}", serde_json::to_string_pretty(&started)?);
        return Ok(ExitCode::SUCCESS);
    }
    if !g.json {
        eprintln!("run #{} of {}/{} started", started.run, started.project, started.job);
    }
    if args.no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    // Stream the log while waiting for the run to end.
    let mut streaming: Option<tokio::task::JoinHandle<()>> = None;
    let final_run = loop {
        let h = c.job(job).await?;
        let Some(r) = h.runs.iter().find(|r| r.id == started.run).cloned() else {
            bail!("run #{} of {job} is gone from its history", started.run);
        };
        if streaming.is_none() && r.node.is_some() && !g.json {
            if let Ok(resp) = c.run_logs(job, started.run, true).await {
                streaming = Some(tokio::spawn(async move {
                    let mut body = resp.into_body();
                    while let Some(Ok(frame)) = body.frame().await {
                        if let Ok(data) = frame.into_data() {
                            use std::io::Write;
                            let mut out = std::io::stdout().lock();
                            let _ = out.write_all(&data);
                            let _ = out.flush();
                        }
                    }
                }));
            }
        }
        if !matches!(r.state.as_str(), "pending" | "running") {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    if let Some(s) = streaming {
        // The last lines come within one log poll (200 ms).
        tokio::time::sleep(Duration::from_millis(700)).await;
        s.abort();
    }
    if g.json {
        println!("{}", serde_json::to_string_pretty(&final_run)?);
    } else {
        eprintln!(
            "run #{} of {}/{} {} after {} attempt(s){}",
            final_run.id,
            started.project,
            started.job,
            result_of(&final_run),
            final_run.attempt,
            final_run.node.as_ref().map(|n| format!(" on {n}")).unwrap_or_default()
        );
    }
    Ok(match (final_run.state.as_str(), final_run.exit_code) {
        ("succeeded", _) => ExitCode::SUCCESS,
        (_, Some(code)) if (1..=255).contains(&code) => ExitCode::from(code as u8),
        _ => ExitCode::from(1),
    })
}

fn job_row(j: &JobView) -> Vec<String> {
    vec![
        j.name.clone(),
        j.project.clone(),
        j.schedule.clone().unwrap_or_else(|| "(holdfast run)".into()),
        j.next_at_ms.map(utc).unwrap_or_else(|| "-".into()),
        j.last.as_ref().map(|r| format!("#{} {}", r.id, utc(r.created_at_ms))).unwrap_or_else(|| "-".into()),
        j.last.as_ref().map(result_of).unwrap_or_else(|| "-".into()),
        j.active.to_string(),
    ]
}

pub async fn jobs(g: &Global, args: JobsArgs) -> Result<ExitCode> {
    let c = client(g)?;
    match args.job {
        None => {
            let r = c.jobs().await?;
            if g.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else if r.jobs.is_empty() {
                println!("no jobs (declare some under `jobs:` in a spec)");
            } else {
                let rows: Vec<Vec<String>> = r.jobs.iter().map(job_row).collect();
                print!(
                    "{}",
                    table(&["JOB", "PROJECT", "SCHEDULE", "NEXT (UTC)", "LAST RUN", "RESULT", "ACTIVE"], &rows)
                );
            }
        }
        Some(job) => {
            let (_, job) = split(&job);
            let h = c.job(job).await?;
            if g.json {
                println!("{}", serde_json::to_string_pretty(&h)?);
            } else {
                print!(
                    "{}",
                    table(
                        &["JOB", "PROJECT", "SCHEDULE", "NEXT (UTC)", "LAST RUN", "RESULT", "ACTIVE"],
                        &[job_row(&h.job)]
                    )
                );
                println!();
                let rows: Vec<Vec<String>> = h
                    .runs
                    .iter()
                    .map(|r| {
                        vec![
                            format!("#{}", r.id),
                            r.slot_ms.map(utc).unwrap_or_else(|| r.by.clone()),
                            r.attempt.to_string(),
                            r.node.clone().unwrap_or_else(|| "-".into()),
                            r.started_at_ms.map(utc).unwrap_or_else(|| "-".into()),
                            match (r.started_at_ms, r.finished_at_ms) {
                                (Some(a), Some(b)) => format!("{:.1}s", b.saturating_sub(a) as f64 / 1000.0),
                                _ => "-".into(),
                            },
                            result_of(r),
                        ]
                    })
                    .collect();
                print!("{}", table(&["RUN", "SLOT / BY", "ATTEMPT", "NODE", "STARTED", "TOOK", "RESULT"], &rows));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
