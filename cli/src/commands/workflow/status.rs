//! `ork workflow status NAME`: the newest version, its tasks, its recent runs.

use clap::Args;
use ork_proto::v1::{GetWorkflowRequest, ListRunsRequest, Run, Workflow};
use serde::Serialize;

use crate::commands::Context;
use crate::output::{self, OutputFormat};

/// How many recent runs to show.
const RECENT_RUNS: u32 = 10;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The workflow's name.
    name: String,
}

/// The JSON shape: `{"workflow": Workflow, "runs": [Run]}`.
#[derive(Serialize)]
struct WorkflowStatus<'a> {
    workflow: &'a Workflow,
    runs: &'a [Run],
}

pub async fn run(args: StatusArgs, ctx: &Context) -> anyhow::Result<()> {
    let client = ctx.connect().await?;
    let workflow = client
        .workflows
        .clone()
        .get_workflow(GetWorkflowRequest {
            name: args.name.clone(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .workflow
        .unwrap_or_default();
    let runs = client
        .runs
        .clone()
        .list_runs(ListRunsRequest {
            workflow: args.name,
            limit: RECENT_RUNS,
            ..Default::default()
        })
        .await?
        .into_inner()
        .runs;
    match ctx.output {
        OutputFormat::Json => output::print_json(&WorkflowStatus {
            workflow: &workflow,
            runs: &runs,
        }),
        OutputFormat::Table => output::emit(&output::render_workflow(
            &workflow,
            &runs,
            chrono::Utc::now(),
            ctx.style,
        )),
    }
}
