//! `ork run logs ID [--task T] [--follow]`: task log lines, paged with the
//! server's cursor.

use std::time::Duration;

use clap::Args;
use ork_proto::v1::GetTaskLogsRequest;

use crate::commands::Context;
use crate::output::{self, OutputFormat};

/// Pause between two polls that returned nothing new.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

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

pub async fn run(args: LogsArgs, ctx: &Context) -> anyhow::Result<()> {
    let client = ctx.connect().await?;
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
            match ctx.output {
                OutputFormat::Json => output::emit_line(&output::to_json_line(line)?)?,
                OutputFormat::Table => {
                    // With one task picked, a prefix on every line is noise,
                    // unless it fans out and lines must say which instance.
                    let bare = args.task.is_some() && line.parallel_index.is_none();
                    output::emit_line(&output::render_log_line(line, bare, ctx.style))?;
                }
            }
        }
        if !response.next_cursor.is_empty() {
            cursor = response.next_cursor;
        }
        if !response.lines.is_empty() {
            // More may be waiting past this page; ask again at once.
            continue;
        }
        // `complete` means no line can come any more; without --follow we
        // stop at the end of what exists now.
        if !args.follow || response.complete {
            return Ok(());
        }
        tokio::time::sleep(FOLLOW_INTERVAL).await;
    }
}
