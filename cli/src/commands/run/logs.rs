//! `ork run logs ID [--task T] [--follow]`: task log lines, paged with the
//! server's cursor; `--follow` reads the server's `FollowTaskLogs` stream,
//! which pushes lines as they are written and ends when the tasks end.

use clap::Args;
use ork_proto::v1::{FollowTaskLogsRequest, GetTaskLogsRequest, LogLine};

use crate::commands::Context;
use crate::output::{self, OutputFormat};

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The run's id.
    id: String,
    /// Only this task's lines.
    #[arg(long)]
    task: Option<String>,
    /// Keep printing new lines until every selected task has finished.
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
        return Ok(());
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
