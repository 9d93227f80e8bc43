//! `ork schedule trigger WORKFLOW`: one run now, as the schedule would.

use chrono::Utc;
use clap::Args;
use ork_proto::v1::TriggerScheduleRequest;

use crate::commands::Context;
use crate::output::{self, OutputFormat};

#[derive(Debug, Args)]
pub struct TriggerArgs {
    /// The workflow whose schedule to fire.
    workflow: String,
}

pub async fn run(args: TriggerArgs, ctx: &Context) -> anyhow::Result<()> {
    let client = ctx.connect().await?;
    let run = client
        .schedules
        .clone()
        .trigger_schedule(TriggerScheduleRequest {
            workflow: args.workflow,
        })
        .await?
        .into_inner()
        .run
        .unwrap_or_default();
    match ctx.output {
        OutputFormat::Json => output::print_json(&run),
        OutputFormat::Table => output::emit(&output::render_run_list(
            std::slice::from_ref(&run),
            Utc::now(),
            ctx.style,
        )),
    }
}
