//! `ork schedule pause WORKFLOW` and `ork schedule resume WORKFLOW`.

use clap::Args;
use ork_proto::v1::{PauseScheduleRequest, ResumeScheduleRequest};

use crate::commands::Context;
use crate::output::{self, OutputFormat};

#[derive(Debug, Args)]
pub struct PauseArgs {
    /// The workflow whose schedule to change.
    workflow: String,
}

pub async fn run(args: PauseArgs, pause: bool, ctx: &Context) -> anyhow::Result<()> {
    let client = ctx.connect().await?;
    let mut schedules = client.schedules.clone();
    let schedule = if pause {
        schedules
            .pause_schedule(PauseScheduleRequest {
                workflow: args.workflow,
            })
            .await?
            .into_inner()
            .schedule
    } else {
        schedules
            .resume_schedule(ResumeScheduleRequest {
                workflow: args.workflow,
            })
            .await?
            .into_inner()
            .schedule
    }
    .unwrap_or_default();
    match ctx.output {
        OutputFormat::Json => output::print_json(&schedule),
        OutputFormat::Table => {
            if pause {
                eprintln!(
                    "paused the schedule of `{}`: it fires nothing until `ork schedule resume {}`",
                    schedule.workflow, schedule.workflow
                );
            } else {
                eprintln!(
                    "resumed the schedule of `{}`; fires missed while paused are not caught up (`ork schedule backfill` runs them)",
                    schedule.workflow
                );
            }
            output::emit(&output::render_schedule_list(
                std::slice::from_ref(&schedule),
                ctx.style,
            ))
        }
    }
}
