//! `ork workflow versions NAME`: deployed versions, newest first.

use clap::Args;
use ork_proto::v1::ListWorkflowVersionsRequest;

use crate::commands::Context;
use crate::output::{self, OutputFormat};

#[derive(Debug, Args)]
pub struct VersionsArgs {
    /// The workflow's name.
    name: String,
}

pub async fn run(args: VersionsArgs, ctx: &Context) -> anyhow::Result<()> {
    let client = ctx.connect().await?;
    let versions = client
        .workflows
        .clone()
        .list_workflow_versions(ListWorkflowVersionsRequest { name: args.name })
        .await?
        .into_inner()
        .versions;
    match ctx.output {
        // A bare array, as the other list commands print.
        OutputFormat::Json => output::print_json(&versions),
        OutputFormat::Table => output::emit(&output::render_version_list(&versions, ctx.style)),
    }
}
