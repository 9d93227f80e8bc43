//! `ork schedule backfill WORKFLOW --from T --to T [--max-concurrent N]`:
//! one run per fire in the range that has none yet.
//!
//! Idempotent: the server creates a fire's run under the same unique key
//! the schedule uses, so fires that already ran (or an earlier backfill
//! covered) are skipped. With `--max-concurrent N` this command keeps at
//! most N of the workflow's scheduled runs unfinished, asking the server
//! for more runs as earlier ones finish; interrupted, it can simply be run
//! again.

use std::time::Duration;

use chrono::Utc;
use clap::Args;
use ork_proto::v1::{BackfillScheduleRequest, ListRunsRequest, Run};

use crate::commands::Context;
use crate::commands::run::list::parse_time;
use crate::error::usage;
use crate::output::{self, OutputFormat};

/// How often `--max-concurrent` looks whether runs finished.
const POLL: Duration = Duration::from_secs(1);

#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// The workflow whose schedule to backfill.
    workflow: String,
    /// The first fire time to cover (inclusive): an RFC 3339 time or an
    /// age (`48h`).
    #[arg(long, value_name = "TIME|AGE")]
    from: String,
    /// The last fire time to cover (inclusive), not in the future: an RFC
    /// 3339 time or an age (`0s` for now).
    #[arg(long, value_name = "TIME|AGE")]
    to: String,
    /// Keep at most N of the workflow's scheduled runs unfinished at once
    /// (default: create every run at once).
    #[arg(long, value_name = "N")]
    max_concurrent: Option<u32>,
}

pub async fn run(args: BackfillArgs, ctx: &Context) -> anyhow::Result<()> {
    let now = Utc::now();
    let from = parse_time("--from", &args.from, now)?;
    let to = parse_time("--to", &args.to, now)?;
    if args.max_concurrent == Some(0) {
        return Err(usage("--max-concurrent: give at least 1"));
    }
    let client = ctx.connect().await?;
    let mut created: Vec<Run> = Vec::new();
    let fires = loop {
        let limit = match args.max_concurrent {
            None => 0,
            Some(max) => {
                let active = active_runs(&client, &args.workflow).await?;
                if active >= max {
                    tokio::time::sleep(POLL).await;
                    continue;
                }
                max - active
            }
        };
        let reply = client
            .schedules
            .clone()
            .backfill_schedule(BackfillScheduleRequest {
                workflow: args.workflow.clone(),
                start_time: Some(ork_proto::time::to_proto(from)),
                end_time: Some(ork_proto::time::to_proto(to)),
                limit,
            })
            .await?
            .into_inner();
        if ctx.output == OutputFormat::Table && !reply.runs.is_empty() {
            eprintln!(
                "created {} run(s); {} fire(s) left",
                reply.runs.len(),
                reply.remaining
            );
        }
        created.extend(reply.runs);
        if reply.remaining == 0 {
            break reply.fires;
        }
    };
    let existing = usize::try_from(fires)?.saturating_sub(created.len());
    match ctx.output {
        OutputFormat::Json => output::print_json(&created)?,
        OutputFormat::Table => {
            output::emit(&output::render_run_list(&created, Utc::now(), ctx.style))?;
            eprintln!(
                "{fires} fire(s) in the range: {} run(s) created, {existing} already had one",
                created.len()
            );
        }
    }
    Ok(())
}

/// The workflow's scheduled runs not finished yet.
async fn active_runs(client: &crate::client::Client, workflow: &str) -> anyhow::Result<u32> {
    let page = client
        .runs
        .clone()
        .list_runs(ListRunsRequest {
            workflow: workflow.to_owned(),
            status: vec!["pending".into(), "running".into()],
            triggered_by: vec!["schedule".into()],
            limit: 1,
            include_total: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(u32::try_from(page.total.unwrap_or(0))?)
}
