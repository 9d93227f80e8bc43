//! The server-streaming methods of `ork.v1.RunService`: `FollowTaskLogs` and
//! `WatchRun`. Each re-reads committed state when the [`EventHub`] says
//! something changed, and pushes what is new (`WatchRun`: the whole run
//! first and last, only the task runs that changed in between); the first
//! read happens before the stream opens, so a bad id fails the call itself
//! (NOT_FOUND) rather than its first message.
//!
//! [`EventHub`]: super::events::EventHub

use std::collections::{HashMap, HashSet};

use ork_proto::v1::{self, run_service_server::RunService};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status};

use super::run_service::{RunApi, run_is_over};

/// What a streaming method returns.
pub type Stream<T> = ReceiverStream<Result<T, Status>>;

/// Messages buffered per stream before the reader must catch up.
const BUFFER: usize = 16;

async fn logs_page(
    api: &RunApi,
    req: &v1::FollowTaskLogsRequest,
    cursor: &str,
) -> Result<v1::GetTaskLogsResponse, Status> {
    let page = api
        .get_task_logs(Request::new(v1::GetTaskLogsRequest {
            run_id: req.run_id.clone(),
            task: req.task.clone(),
            cursor: cursor.to_owned(),
            limit: 0,
        }))
        .await?;
    Ok(page.into_inner())
}

pub(super) async fn follow_task_logs(
    api: &RunApi,
    req: v1::FollowTaskLogsRequest,
) -> Result<Stream<v1::FollowTaskLogsResponse>, Status> {
    let api = RunApi {
        ctx: api.ctx.clone(),
    };
    let mut changes = api.ctx.events.subscribe();
    changes.mark_seen();
    let mut page = logs_page(&api, &req, &req.cursor).await?;
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(async move {
        loop {
            let cursor = page.next_cursor.clone();
            let had_lines = !page.lines.is_empty();
            if had_lines {
                let message = v1::FollowTaskLogsResponse {
                    lines: page.lines,
                    next_cursor: cursor.clone(),
                };
                if tx.send(Ok(message)).await.is_err() {
                    return;
                }
            }
            // `complete` is read before the lines, so it is only true once
            // the last line of every selected task is in this page.
            if page.complete {
                return;
            }
            if !had_lines {
                tokio::select! {
                    open = changes.wait() => if !open { return },
                    () = tx.closed() => return,
                }
            }
            changes.mark_seen();
            page = match logs_page(&api, &req, &cursor).await {
                Ok(page) => page,
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            };
        }
    });
    Ok(ReceiverStream::new(rx))
}

/// What a watcher is told about: the run's status and each task run's
/// status, attempt and pending reason (times change on their own; a reason
/// changes when something it depends on does, e.g. a worker attaching).
fn fingerprint(run: &v1::Run) -> (String, Vec<(String, String, u32, String)>) {
    (
        run.status.clone(),
        run.tasks
            .iter()
            .map(|t| {
                (
                    t.id.clone(),
                    t.status.clone(),
                    t.attempt,
                    t.pending_reason.clone(),
                )
            })
            .collect(),
    )
}

async fn current_run(api: &RunApi, id: &str) -> Result<v1::Run, Status> {
    let record = api.load_run(id).await?;
    api.run_with_tasks(&record).await
}

pub(super) async fn watch_run(
    api: &RunApi,
    req: v1::WatchRunRequest,
) -> Result<Stream<v1::WatchRunResponse>, Status> {
    let api = RunApi {
        ctx: api.ctx.clone(),
    };
    let mut changes = api.ctx.events.subscribe();
    changes.mark_seen();
    let mut run = current_run(&api, &req.id).await?;
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(async move {
        let mut last = None;
        // The task runs as last sent, by id: later messages carry only
        // those that differ.
        let mut sent: Option<HashMap<String, v1::TaskRun>> = None;
        loop {
            let seen = fingerprint(&run);
            let over = run_is_over(&run.status);
            if last.as_ref() != Some(&seen) {
                let message = match (&mut sent, over) {
                    (Some(sent), false) => changes_since(sent, run),
                    // The first and the last message are whole.
                    _ => {
                        sent = Some(by_id(&run.tasks));
                        v1::WatchRunResponse {
                            run: Some(run),
                            ..Default::default()
                        }
                    }
                };
                if tx.send(Ok(message)).await.is_err() {
                    return;
                }
                last = Some(seen);
            }
            if over {
                return;
            }
            tokio::select! {
                open = changes.wait() => if !open { return },
                () = tx.closed() => return,
            }
            changes.mark_seen();
            run = match current_run(&api, &req.id).await {
                Ok(run) => run,
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            };
        }
    });
    Ok(ReceiverStream::new(rx))
}

fn by_id(tasks: &[v1::TaskRun]) -> HashMap<String, v1::TaskRun> {
    tasks.iter().map(|t| (t.id.clone(), t.clone())).collect()
}

/// The message for `run` after `sent`: the run's own fields, the task runs
/// that differ from (or are missing in) `sent`, and the ids of those gone.
/// `sent` becomes what `run` shows.
fn changes_since(
    sent: &mut HashMap<String, v1::TaskRun>,
    mut run: v1::Run,
) -> v1::WatchRunResponse {
    let tasks = std::mem::take(&mut run.tasks);
    let current: HashSet<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
    let mut removed_task_ids: Vec<String> = sent
        .keys()
        .filter(|id| !current.contains(id.as_str()))
        .cloned()
        .collect();
    removed_task_ids.sort();
    for id in &removed_task_ids {
        sent.remove(id);
    }
    for task in tasks {
        if sent.get(&task.id) != Some(&task) {
            sent.insert(task.id.clone(), task.clone());
            run.tasks.push(task);
        }
    }
    v1::WatchRunResponse {
        run: Some(run),
        changes_only: true,
        removed_task_ids,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, status: &str) -> v1::TaskRun {
        v1::TaskRun {
            id: id.into(),
            name: id.into(),
            status: status.into(),
            ..Default::default()
        }
    }

    #[test]
    fn later_messages_carry_only_what_changed() {
        let first = vec![
            task("a", "running"),
            task("p", "pending"),
            task("z", "pending"),
        ];
        let mut sent = by_id(&first);
        let run = v1::Run {
            id: "r".into(),
            status: "running".into(),
            tasks: vec![
                task("a", "success"),
                task("f0", "running"),
                task("z", "pending"),
            ],
            ..Default::default()
        };
        let message = changes_since(&mut sent, run.clone());
        assert!(message.changes_only);
        assert_eq!(message.removed_task_ids, ["p"]);
        let ids: Vec<&str> = message
            .run
            .as_ref()
            .expect("run")
            .tasks
            .iter()
            .map(|t| t.id.as_str())
            .collect();
        assert_eq!(ids, ["a", "f0"]);
        // Applied to the first message, the changes give the whole run back.
        let whole = ork_proto::watch::apply(
            Some(v1::Run {
                id: "r".into(),
                tasks: first,
                ..Default::default()
            }),
            message,
        );
        let mut got: Vec<&str> = whole.tasks.iter().map(|t| t.id.as_str()).collect();
        got.sort();
        assert_eq!(got, ["a", "f0", "z"]);
        // Nothing changed: no task runs.
        let again = changes_since(&mut sent, run);
        assert!(again.run.expect("run").tasks.is_empty());
        assert!(again.removed_task_ids.is_empty());
    }
}
