//! `ork run retry ID [--task T] [--wait]`.

use clap::Args;
use ork_proto::v1::RetryRunRequest;

use crate::commands::Context;
use crate::output::{self, OutputFormat};

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// The finished run to retry.
    id: String,
    /// Re-run this task and everything downstream of it, even if it succeeded.
    #[arg(long)]
    task: Option<String>,
    /// Wait for the run to end, print it, and exit 1 unless it succeeded.
    #[arg(long)]
    wait: bool,
}

pub async fn run(args: RetryArgs, ctx: &Context) -> anyhow::Result<()> {
    let client = ctx.connect().await?;
    let request = RetryRunRequest {
        id: args.id.clone(),
        task: args.task.unwrap_or_default(),
    };
    let run = client
        .runs
        .clone()
        .retry_run(request)
        .await?
        .into_inner()
        .run
        .unwrap_or_default();
    if run.id == args.id {
        eprintln!("retrying run {}", run.id);
    } else {
        eprintln!("started run {} to retry run {}", run.id, args.id);
    }
    if args.wait {
        return super::wait_and_report(&client, &run.id, ctx).await;
    }
    match ctx.output {
        OutputFormat::Json => output::print_json(&run)?,
        OutputFormat::Table => output::emit_line(&run.id)?,
    }
    Ok(())
}
