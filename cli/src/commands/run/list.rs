//! `ork run list [WORKFLOW] [--limit N]`: runs, newest first.

use clap::Args;
use ork_proto::v1::ListRunsRequest;

use crate::commands::Context;
use crate::output::{self, OutputFormat};

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only runs of this workflow.
    workflow: Option<String>,
    /// At most this many runs.
    #[arg(long, default_value_t = 20)]
    limit: u32,
}

pub async fn run(args: ListArgs, ctx: &Context) -> anyhow::Result<()> {
    let client = ctx.connect().await?;
    let request = ListRunsRequest {
        workflow: args.workflow.unwrap_or_default(),
        limit: args.limit,
    };
    let runs = client
        .runs
        .clone()
        .list_runs(request)
        .await?
        .into_inner()
        .runs;
    match ctx.output {
        // A bare array, like `ork workflow list`: proto3 JSON would print an
        // empty `ListRunsResponse` as `{}`.
        OutputFormat::Json => output::print_json(&runs),
        OutputFormat::Table => output::emit(&output::render_run_list(
            &runs,
            chrono::Utc::now(),
            ctx.style,
        )),
    }
}
