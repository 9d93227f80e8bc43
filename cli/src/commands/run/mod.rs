//! `ork run ...`: start runs, watch them, read their logs, cancel and retry.

pub mod cancel;
pub mod list;
pub mod logs;
pub mod retry;
pub mod start;
pub mod status;

use std::time::Duration;

use clap::Subcommand;
use ork_proto::v1::{GetRunRequest, Run};

use super::Context;
use crate::client::Client;
use crate::error::RunNotSuccessful;

#[derive(Debug, Subcommand)]
pub enum RunCommand {
    /// Start a run of a workflow's newest version.
    Start(start::StartArgs),
    /// Show a run and its tasks.
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

fn is_terminal(status: &str) -> bool {
    matches!(status, "success" | "failed" | "cancelled")
}

/// Polls the run until it ends, quickly at first (most dev runs take well
/// under a second) and backing off to once a second for long ones.
async fn wait_for_run(client: &Client, id: &str) -> anyhow::Result<Run> {
    let mut delay = Duration::from_millis(100);
    loop {
        let run = client
            .runs
            .clone()
            .get_run(GetRunRequest { id: id.to_owned() })
            .await?
            .into_inner()
            .run
            .unwrap_or_default();
        if is_terminal(&run.status) {
            return Ok(run);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

/// Waits for the run, prints it like `ork run status`, and turns anything
/// but `success` into exit code 1.
async fn wait_and_report(client: &Client, id: &str, ctx: &Context) -> anyhow::Result<()> {
    let run = wait_for_run(client, id).await?;
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
