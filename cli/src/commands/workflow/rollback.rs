//! `ork workflow rollback NAME VERSION`: an earlier version becomes current.

use clap::Args;
use ork_proto::v1::RollbackWorkflowRequest;

use crate::commands::Context;
use crate::output::{self, OutputFormat};

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The workflow's name.
    name: String,
    /// The version to make current: a hash or at least 6 of its first
    /// characters (`ork workflow versions NAME` lists them).
    #[arg(value_name = "VERSION")]
    target: String,
}

pub async fn run(args: RollbackArgs, ctx: &Context) -> anyhow::Result<()> {
    let client = ctx.connect().await?;
    let workflow = client
        .workflows
        .clone()
        .rollback_workflow(RollbackWorkflowRequest {
            name: args.name,
            version: args.target,
        })
        .await?
        .into_inner()
        .workflow
        .unwrap_or_default();
    match ctx.output {
        OutputFormat::Json => output::print_json(&workflow),
        OutputFormat::Table => {
            eprintln!(
                "`{}` now runs version {}; runs started before keep theirs",
                workflow.name, workflow.version
            );
            Ok(())
        }
    }
}
