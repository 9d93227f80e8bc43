//! `ork run logs ID [--task T] [--follow]`: task log lines, paged with the
//! server's cursor; `--follow` reads the server's `FollowTaskLogs` stream,
//! which pushes lines as they are written and ends when the tasks end, then
//! exits 1 when what it followed did not succeed.

use clap::Args;
use ork_proto::v1::{FollowTaskLogsRequest, GetRunRequest, GetTaskLogsRequest, LogLine};

use crate::client::Client;
use crate::commands::Context;
use crate::error::{RunNotSuccessful, TaskNotSuccessful};
use crate::output::{self, OutputFormat};

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The run's id.
    id: String,
    /// Only this task's lines.
    #[arg(long)]
    task: Option<String>,
    /// Keep printing new lines until every selected task has finished; then
    /// exit 1 if the task (without --task: the run) did not succeed.
    #[arg(long, short = 'f')]
    follow: bool,
}

fn print(line: &LogLine, args: &LogsArgs, ctx: &Context) -> anyhow::Result<()> {
    match ctx.output {
        OutputFormat::Json => output::emit_line(&output::to_json_line(line)?)?,
        OutputFormat::Table => {
            // With one task picked, a prefix on every line is noise,
            // unless it fans out and lines must say which instance.
            let bare = args.task.is_some() && line.parallel_index.is_none();
            output::emit_line(&output::render_log_line(line, bare, ctx.style))?;
        }
    }
    Ok(())
}

pub async fn run(args: LogsArgs, ctx: &Context) -> anyhow::Result<()> {
    let client = ctx.connect().await?;
    if args.follow {
        let mut stream = client
            .runs
            .clone()
            .follow_task_logs(FollowTaskLogsRequest {
                run_id: args.id.clone(),
                task: args.task.clone().unwrap_or_default(),
                cursor: String::new(),
            })
            .await?
            .into_inner();
        while let Some(message) = stream.message().await? {
            for line in &message.lines {
                print(line, &args, ctx)?;
            }
        }
        return outcome(&client, &args).await;
    }
    let mut cursor = String::new();
    loop {
        let response = client
            .runs
            .clone()
            .get_task_logs(GetTaskLogsRequest {
                run_id: args.id.clone(),
                task: args.task.clone().unwrap_or_default(),
                cursor: cursor.clone(),
                limit: 0,
            })
            .await?
            .into_inner();
        for line in &response.lines {
            print(line, &args, ctx)?;
        }
        if !response.next_cursor.is_empty() {
            cursor = response.next_cursor;
        }
        if response.lines.is_empty() {
            return Ok(());
        }
        // More may be waiting past this page; ask again at once.
    }
}

/// After a follow: Ok when what was followed succeeded, the exit-1 error
/// when it did not, and an error when the stream ended before it did (the
/// server stopped).
async fn outcome(client: &Client, args: &LogsArgs) -> anyhow::Result<()> {
    let run = client
        .runs
        .clone()
        .get_run(GetRunRequest {
            id: args.id.clone(),
        })
        .await?
        .into_inner()
        .run
        .unwrap_or_default();
    let over = |status: &str| matches!(status, "success" | "failed" | "cancelled" | "skipped");
    let cut_short = || {
        anyhow::anyhow!(
            "the server ended the log stream of run {} before it finished (was it stopped?); run the command again to follow it",
            run.id
        )
    };
    if let Some(task) = &args.task {
        let instances: Vec<_> = run.tasks.iter().filter(|t| &t.name == task).collect();
        if instances.iter().any(|t| !over(&t.status)) {
            return Err(cut_short());
        }
        if let Some(bad) = instances.iter().find(|t| t.status != "success") {
            return Err(anyhow::Error::new(TaskNotSuccessful {
                run: run.id.clone(),
                task: task.clone(),
                status: bad.status.clone(),
            }));
        }
        return Ok(());
    }
    match run.status.as_str() {
        "success" => Ok(()),
        "failed" | "cancelled" => Err(anyhow::Error::new(RunNotSuccessful {
            id: run.id,
            status: run.status,
        })),
        _ => Err(cut_short()),
    }
}
