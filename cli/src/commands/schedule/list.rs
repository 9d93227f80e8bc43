//! `ork schedule list [--next N]`.

use clap::Args;
use ork_proto::v1::ListSchedulesRequest;

use crate::commands::Context;
use crate::output::{self, OutputFormat};

#[derive(Debug, Args)]
pub struct ListArgs {
    /// How many next fires to show per schedule (at most 20).
    #[arg(long, default_value_t = 3)]
    next: u32,
}

pub async fn run(args: ListArgs, ctx: &Context) -> anyhow::Result<()> {
    let client = ctx.connect().await?;
    let schedules = client
        .schedules
        .clone()
        .list_schedules(ListSchedulesRequest { next: args.next })
        .await?
        .into_inner()
        .schedules;
    match ctx.output {
        // A bare array, as the other list commands print.
        OutputFormat::Json => output::print_json(&schedules),
        OutputFormat::Table => output::emit(&output::render_schedule_list(&schedules, ctx.style)),
    }
}
