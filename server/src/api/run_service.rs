//! `ork.v1.RunService`: start, inspect, cancel and retry runs; read logs.

use chrono::Utc;
use ork_domain::{RunStatus, TriggerType};
use ork_proto::json::from_proto_opt;
use ork_proto::v1::{self, run_service_server::RunService};
use serde_json::Value;
use tonic::{Request, Response, Status};

use super::ApiContext;
use super::convert;
use super::error::{ErrorKind, from_state, status};
use super::run_streams;
use crate::state::{LogQuery, NewRun, PageKey, RunQuery, RunRecord};
use crate::views;

pub struct RunApi {
    pub(crate) ctx: ApiContext,
}

/// The statuses after which a run changes no more (unless retried).
pub(super) fn run_is_over(status: &str) -> bool {
    matches!(status, "success" | "failed" | "cancelled")
}

impl RunApi {
    pub(super) async fn run_with_tasks(&self, record: &RunRecord) -> Result<v1::Run, Status> {
        // Three independent reads, on three pooled connections at once: a
        // watcher re-reads the run after every change, and the last re-read
        // is what a client waiting for the run's end waits on.
        let state = &self.ctx.state;
        let (tasks, attempts, version) = tokio::try_join!(
            state.list_task_runs(&record.id),
            state.list_run_attempts(&record.id),
            state.get_version(&record.workflow_version),
        )
        .map_err(from_state)?;
        let dispatch = self.dispatch_view(record);
        let context = views::ReasonContext {
            version: version.as_deref(),
            now: Utc::now(),
            run_waiting: record.status == ork_domain::RunStatus::Pending,
            dispatch: Some(&dispatch),
        };
        let tasks = views::task_runs(&tasks, &attempts, &context);
        Ok(views::run(record, tasks))
    }

    /// This server's executors as the reasons of pending tasks see them.
    fn dispatch_view(&self, record: &RunRecord) -> views::DispatchView {
        views::DispatchView {
            handlers: self.ctx.pool.handler_slots(),
            launched_free: self.ctx.executors.launch_capacity(),
            owns_run: record.owner.as_deref().is_none_or(|o| o == self.ctx.owner),
            owner: record.owner.clone().unwrap_or_default(),
            schedule_to_start_timeout: self.ctx.schedule_to_start_timeout,
        }
    }

    /// The error for a task name the run's workflow lacks, with the closest
    /// name and the list.
    async fn unknown_task(&self, kind: ErrorKind, run: &RunRecord, task: &str) -> Status {
        let version = self
            .ctx
            .state
            .get_version(&run.workflow_version)
            .await
            .ok()
            .flatten();
        let names: Vec<&str> = version
            .as_ref()
            .map(|v| v.definition.tasks.iter().map(|t| t.name.as_str()).collect())
            .unwrap_or_default();
        let hint = ork_domain::suggest::closest(task, names.iter().copied())
            .map(|c| format!(" (did you mean `{c}`?)"))
            .unwrap_or_default();
        status(
            kind,
            format!(
                "run `{}` has no task `{task}`{hint}; its tasks are: {}",
                run.id,
                names.join(", ")
            ),
        )
    }

    pub(super) async fn load_run(&self, id: &str) -> Result<RunRecord, Status> {
        tracing::Span::current().record("run_id", id);
        self.ctx
            .state
            .get_run(id)
            .await
            .map_err(from_state)?
            .ok_or_else(|| {
                status(
                    ErrorKind::NotFound,
                    format!("run `{id}` not found; `ork run list` shows recent runs"),
                )
            })
    }
}

/// Most values one list filter (`status`, `triggered_by`) takes.
const MAX_FILTER_VALUES: usize = 16;

/// Reads the filters of a ListRuns request, naming the field of any bad one.
fn run_query(req: v1::ListRunsRequest) -> Result<RunQuery, Status> {
    fn words<T: Copy>(
        field: &str,
        given: &[String],
        parse: fn(&str) -> Option<T>,
        all: &[T],
        show: fn(T) -> &'static str,
    ) -> Result<Vec<T>, Status> {
        if given.len() > MAX_FILTER_VALUES {
            return Err(invalid(format!(
                "field `{field}`: at most {MAX_FILTER_VALUES} values"
            )));
        }
        given
            .iter()
            .map(|word| {
                parse(word.trim()).ok_or_else(|| {
                    let known: Vec<&str> = all.iter().map(|v| show(*v)).collect();
                    invalid(format!(
                        "field `{field}`: unknown value `{}`; use one of {}",
                        word.escape_debug(),
                        known.join(", ")
                    ))
                })
            })
            .collect()
    }
    fn time(
        field: &str,
        t: Option<pbjson_types::Timestamp>,
    ) -> Result<Option<chrono::DateTime<Utc>>, Status> {
        t.map(|t| {
            ork_proto::time::from_proto(&t)
                .ok_or_else(|| invalid(format!("field `{field}`: the time is out of range")))
        })
        .transpose()
    }
    if req.label.len() > ork_domain::labels::MAX_LABELS {
        return Err(invalid(format!(
            "field `label`: at most {} label filters",
            ork_domain::labels::MAX_LABELS
        )));
    }
    let labels = req
        .label
        .iter()
        .map(|pair| {
            ork_domain::labels::parse_pair(pair).map_err(|e| invalid(format!("field `label`: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let after = match req.page_token.as_str() {
        "" => None,
        token => Some(PageKey::from_token(token).map_err(from_state)?),
    };
    Ok(RunQuery {
        workflow: (!req.workflow.is_empty()).then_some(req.workflow),
        statuses: words(
            "status",
            &req.status,
            RunStatus::parse,
            RunStatus::ALL,
            RunStatus::as_str,
        )?,
        triggers: words(
            "triggered_by",
            &req.triggered_by,
            TriggerType::parse,
            TriggerType::ALL,
            TriggerType::as_str,
        )?,
        created_after: time("created_after", req.created_after)?,
        created_before: time("created_before", req.created_before)?,
        finished_after: time("finished_after", req.finished_after)?,
        finished_before: time("finished_before", req.finished_before)?,
        labels,
        after,
        limit: req.limit,
        include_total: req.include_total,
    })
}

fn invalid(message: String) -> Status {
    status(ErrorKind::InvalidArgument, message)
}

#[tonic::async_trait]
impl RunService for RunApi {
    async fn start_run(
        &self,
        request: Request<v1::StartRunRequest>,
    ) -> Result<Response<v1::StartRunResponse>, Status> {
        let req = request.into_inner();
        let input = match from_proto_opt(req.input.as_ref()) {
            Value::Null => Value::Object(Default::default()),
            v @ Value::Object(_) => v,
            other => {
                return Err(status(
                    ErrorKind::InvalidArgument,
                    format!("field `input`: a run's input must be a JSON object, got {other}"),
                ));
            }
        };
        if let Some(refusal) = super::limits::input_refusal(&input, self.ctx.limits.max_input_bytes)
        {
            return Err(status(ErrorKind::InvalidArgument, refusal));
        }
        let labels: std::collections::BTreeMap<String, String> = req.labels.into_iter().collect();
        ork_domain::labels::check(&labels)
            .map_err(|e| status(ErrorKind::InvalidArgument, format!("field `labels`: {e}")))?;
        let workflow = req.workflow;
        let new = NewRun {
            workflow: workflow.clone(),
            input,
            triggered_by: TriggerType::Manual,
            owner: self.ctx.owner.clone(),
            labels,
        };
        let record = match (req.request_id.as_str(), req.version.as_str()) {
            ("", "") => self.ctx.state.create_run(new, Utc::now()).await,
            ("", version) => {
                self.ctx
                    .state
                    .create_run_on_version(new, version, Utc::now())
                    .await
            }
            (_, "") => self
                .ctx
                .state
                .create_run_once(new, &req.request_id, Utc::now())
                .await
                .map(|(record, _)| record),
            (_, _) => {
                return Err(status(
                    ErrorKind::InvalidArgument,
                    "field `version`: a start on a given version cannot take a `request_id` yet; send one of the two",
                ));
            }
        };
        let record = match record {
            Ok(record) => record,
            // A missing version of an existing workflow says so itself.
            Err(e @ crate::state::Error::NotFound { .. })
                if !req.version.is_empty()
                    && self
                        .ctx
                        .state
                        .get_workflow(&workflow)
                        .await
                        .map_err(from_state)?
                        .is_some() =>
            {
                return Err(from_state(e));
            }
            Err(crate::state::Error::NotFound { .. }) => {
                return Err(
                    super::workflow_service::workflow_not_found(&self.ctx, &workflow).await,
                );
            }
            Err(e) => return Err(from_state(e)),
        };
        Ok(Response::new(v1::StartRunResponse {
            run: Some(self.run_with_tasks(&record).await?),
        }))
    }

    async fn get_run(
        &self,
        request: Request<v1::GetRunRequest>,
    ) -> Result<Response<v1::GetRunResponse>, Status> {
        let record = self.load_run(&request.into_inner().id).await?;
        Ok(Response::new(v1::GetRunResponse {
            run: Some(self.run_with_tasks(&record).await?),
        }))
    }

    async fn list_runs(
        &self,
        request: Request<v1::ListRunsRequest>,
    ) -> Result<Response<v1::ListRunsResponse>, Status> {
        let query = run_query(request.into_inner())?;
        let page = self
            .ctx
            .state
            .query_runs(&query)
            .await
            .map_err(from_state)?;
        Ok(Response::new(v1::ListRunsResponse {
            runs: page
                .runs
                .iter()
                .map(|r| views::run(r, Vec::new()))
                .collect(),
            next_page_token: page.next.map(|k| k.to_token()).unwrap_or_default(),
            total: page.total,
        }))
    }

    async fn cancel_run(
        &self,
        request: Request<v1::CancelRunRequest>,
    ) -> Result<Response<v1::CancelRunResponse>, Status> {
        let id = request.into_inner().id;
        let active = self
            .ctx
            .state
            .cancel_run(&id, Utc::now())
            .await
            .map_err(from_state)?;
        for attempt in active {
            let Some(executor) = self.ctx.executors.get(&attempt.executor) else {
                continue;
            };
            if let Err(e) = executor.cancel(&attempt.fence).await {
                tracing::warn!(error = %e, task_run = %attempt.fence.task_run_id, "could not stop a cancelled attempt");
            }
        }
        let record = self.load_run(&id).await?;
        Ok(Response::new(v1::CancelRunResponse {
            run: Some(self.run_with_tasks(&record).await?),
        }))
    }

    async fn retry_run(
        &self,
        request: Request<v1::RetryRunRequest>,
    ) -> Result<Response<v1::RetryRunResponse>, Status> {
        let req = request.into_inner();
        let task = (!req.task.is_empty()).then_some(req.task.as_str());
        if let Some(task) = task {
            let run = self.load_run(&req.id).await?;
            let known = self
                .ctx
                .state
                .get_version(&run.workflow_version)
                .await
                .map_err(from_state)?
                .is_some_and(|v| v.task(task).is_some());
            if !known {
                return Err(self
                    .unknown_task(ErrorKind::InvalidArgument, &run, task)
                    .await);
            }
        }
        self.ctx
            .state
            .retry_run(&req.id, task, &self.ctx.owner, Utc::now())
            .await
            .map_err(from_state)?;
        let record = self.load_run(&req.id).await?;
        Ok(Response::new(v1::RetryRunResponse {
            run: Some(self.run_with_tasks(&record).await?),
        }))
    }

    async fn list_task_runs(
        &self,
        request: Request<v1::ListTaskRunsRequest>,
    ) -> Result<Response<v1::ListTaskRunsResponse>, Status> {
        let record = self.load_run(&request.into_inner().run_id).await?;
        let run = self.run_with_tasks(&record).await?;
        Ok(Response::new(v1::ListTaskRunsResponse {
            task_runs: run.tasks,
        }))
    }

    async fn get_task_logs(
        &self,
        request: Request<v1::GetTaskLogsRequest>,
    ) -> Result<Response<v1::GetTaskLogsResponse>, Status> {
        let req = request.into_inner();
        let run = self.load_run(&req.run_id).await?;
        let after_id = if req.cursor.is_empty() {
            0
        } else {
            req.cursor.parse::<i64>().map_err(|_| {
                status(
                    ErrorKind::InvalidArgument,
                    "field `cursor`: pass back the `next_cursor` of a previous call",
                )
            })?
        };
        let task = (!req.task.is_empty()).then(|| req.task.clone());
        // Read "finished?" before the lines so a line written just before the
        // end is never missed by a follower that stops on `complete`.
        let tasks = self
            .ctx
            .state
            .list_task_runs(&run.id)
            .await
            .map_err(from_state)?;
        if let Some(t) = &task
            && !tasks.iter().any(|r| &r.task_name == t)
        {
            return Err(self.unknown_task(ErrorKind::NotFound, &run, t).await);
        }
        let finished = run.status.is_terminal()
            || tasks
                .iter()
                .filter(|r| task.as_ref().is_none_or(|t| &r.task_name == t))
                .all(|r| r.status.is_terminal());
        let limit = if req.limit == 0 {
            1000
        } else {
            req.limit.min(10_000)
        };
        let lines = self
            .ctx
            .state
            .get_logs(&LogQuery {
                run_id: run.id.clone(),
                task,
                task_run_attempt: None,
                after_id,
                limit,
            })
            .await
            .map_err(from_state)?;
        let next = lines.last().map_or(after_id, |l| l.id);
        let complete = finished && lines.len() < limit as usize;
        Ok(Response::new(v1::GetTaskLogsResponse {
            lines: lines.iter().map(convert::log_line).collect(),
            next_cursor: next.to_string(),
            complete,
        }))
    }

    type FollowTaskLogsStream = run_streams::Stream<v1::FollowTaskLogsResponse>;

    async fn follow_task_logs(
        &self,
        request: Request<v1::FollowTaskLogsRequest>,
    ) -> Result<Response<Self::FollowTaskLogsStream>, Status> {
        run_streams::follow_task_logs(self, request.into_inner())
            .await
            .map(Response::new)
    }

    type WatchRunStream = run_streams::Stream<v1::WatchRunResponse>;

    async fn watch_run(
        &self,
        request: Request<v1::WatchRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        run_streams::watch_run(self, request.into_inner())
            .await
            .map(Response::new)
    }
}
