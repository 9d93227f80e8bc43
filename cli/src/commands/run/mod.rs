//! `ork run ...`: start runs, watch them, read their logs, cancel and retry.

pub mod cancel;
pub mod list;
pub mod logs;
pub mod retry;
pub mod start;
pub mod status;

mod watch;

use clap::Subcommand;

use super::Context;
use crate::client::Client;
use crate::error::RunNotSuccessful;

#[derive(Debug, Subcommand)]
pub enum RunCommand {
    /// Start a run of a workflow's newest version.
    // `--version` here picks the workflow version to run, not ork's.
    #[command(disable_version_flag = true)]
    Start(start::StartArgs),
    /// Show a run and its tasks (`--watch` follows it live until it ends).
    Status(status::StatusArgs),
    /// List runs, newest first.
    List(list::ListArgs),
    /// Print the log lines of a run's tasks.
    Logs(logs::LogsArgs),
    /// Cancel a run.
    Cancel(cancel::CancelArgs),
    /// Re-run the failed, cancelled and skipped tasks of a finished run.
    Retry(retry::RetryArgs),
}

pub async fn run(cmd: RunCommand, ctx: &Context) -> anyhow::Result<()> {
    match cmd {
        RunCommand::Start(args) => start::run(args, ctx).await,
        RunCommand::Status(args) => status::run(args, ctx).await,
        RunCommand::List(args) => list::run(args, ctx).await,
        RunCommand::Logs(args) => logs::run(args, ctx).await,
        RunCommand::Cancel(args) => cancel::run(args, ctx).await,
        RunCommand::Retry(args) => retry::run(args, ctx).await,
    }
}

/// Waits for the run, prints it like `ork run status`, and turns anything
/// but `success` into exit code 1.
async fn wait_and_report(client: &Client, id: &str, ctx: &Context) -> anyhow::Result<()> {
    let run = watch::watch_run(client, id, ctx).await?;
    status::print_run(&run, ctx)?;
    if run.status == "success" {
        Ok(())
    } else {
        Err(anyhow::Error::new(RunNotSuccessful {
            id: run.id,
            status: run.status,
        }))
    }
}
