//! `ork workflow delete NAME`.

use clap::Args;
use ork_proto::v1::DeleteWorkflowRequest;

use crate::commands::Context;

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The workflow's name.
    name: String,
}

pub async fn run(args: DeleteArgs, ctx: &Context) -> anyhow::Result<()> {
    let client = ctx.connect().await?;
    client
        .workflows
        .clone()
        .delete_workflow(DeleteWorkflowRequest {
            name: args.name.clone(),
        })
        .await?;
    eprintln!(
        "deleted workflow {} (its past runs stay readable)",
        args.name
    );
    Ok(())
}
