//! `ork.v1.WorkerService`: the fenced calls every worker makes for its attempt.

use chrono::{DateTime, Utc};
use ork_proto::json::{from_proto_opt, to_proto};
use ork_proto::v1::{self, worker_service_server::WorkerService};
use tonic::{Request, Response, Status};

use super::ApiContext;
use super::convert::timestamp;
use super::error::{ErrorKind, from_state, status};
use crate::secrets::{mask, mask_json};
use crate::state::{Failure, FailureKind, Fence, NewLogLine};

/// Longest log line stored; longer lines are cut with a marker.
const MAX_LOG_LINE: usize = 64 * 1024;
/// Most lines in one AppendLogs call.
const MAX_LOG_BATCH: usize = 5000;

pub struct WorkerApi {
    pub(crate) ctx: ApiContext,
}

fn fence(attempt: Option<v1::AttemptRef>) -> Result<Fence, Status> {
    let a = attempt.ok_or_else(|| {
        status(ErrorKind::InvalidArgument, "field `attempt`: every worker call names its attempt (task_run_id, attempt, token)")
    })?;
    if a.task_run_id.is_empty() || a.token.is_empty() || a.attempt == 0 {
        return Err(status(
            ErrorKind::InvalidArgument,
            "field `attempt`: task_run_id, attempt (from 1) and token are all required; use the values the executor passed (ORK_TASK_RUN_ID, ORK_ATTEMPT, ORK_TOKEN)",
        ));
    }
    Ok(Fence { task_run_id: a.task_run_id, attempt: a.attempt, token: a.token })
}

fn time(t: Option<pbjson_types::Timestamp>) -> DateTime<Utc> {
    t.and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
        .unwrap_or_else(Utc::now)
}

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    async fn get_task_spec(
        &self,
        request: Request<v1::GetTaskSpecRequest>,
    ) -> Result<Response<v1::GetTaskSpecResponse>, Status> {
        let fence = fence(request.into_inner().attempt)?;
        let spec = self.ctx.state.attempt_spec(&fence).await.map_err(from_state)?;
        let env = match self.ctx.secrets.resolve_env(&spec.task_name, &spec.env) {
            Ok(env) => env,
            Err(message) => {
                let failure = Failure { kind: FailureKind::Task, error: message.clone(), non_retryable: true };
                self.ctx.state.fail_attempt(&fence, &failure, Utc::now()).await.map_err(from_state)?;
                self.ctx.events.notify();
                self.ctx.scheduler.wake();
                self.ctx.mirror.wake();
                return Err(status(ErrorKind::FailedPrecondition, message));
            }
        };
        Ok(Response::new(v1::GetTaskSpecResponse {
            spec: Some(v1::TaskSpec {
                run_id: spec.run_id,
                workflow: spec.workflow,
                task_name: spec.task_name,
                task_run_id: spec.task_run_id,
                attempt: spec.attempt,
                parallel_index: spec.parallel_index,
                parallel_count: spec.parallel_count,
                input: Some(to_proto(&spec.input)),
                env,
                timeout_seconds: spec.timeout_seconds,
                deadline: spec.deadline.map(timestamp),
                heartbeat_interval_seconds: u32::try_from(self.ctx.heartbeat_interval.as_secs())
                    .unwrap_or(5)
                    .max(1),
                file: spec.file.unwrap_or_default(),
                file_content: spec.file_content,
                config_file: spec.config_file.unwrap_or_default(),
                config_file_content: spec.config_file_content,
            }),
        }))
    }

    async fn start_task(
        &self,
        request: Request<v1::StartTaskRequest>,
    ) -> Result<Response<v1::StartTaskResponse>, Status> {
        let fence = fence(request.into_inner().attempt)?;
        self.ctx.state.start_attempt(&fence, Utc::now()).await.map_err(from_state)?;
        self.ctx.events.notify();
        self.ctx.mirror.wake();
        Ok(Response::new(v1::StartTaskResponse {}))
    }

    async fn heartbeat(
        &self,
        request: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let fence = fence(request.into_inner().attempt)?;
        let cancelled = self.ctx.state.heartbeat(&fence, Utc::now()).await.map_err(from_state)?;
        Ok(Response::new(v1::HeartbeatResponse { cancelled }))
    }

    async fn append_logs(
        &self,
        request: Request<v1::AppendLogsRequest>,
    ) -> Result<Response<v1::AppendLogsResponse>, Status> {
        let req = request.into_inner();
        let fence = fence(req.attempt)?;
        if req.entries.len() > MAX_LOG_BATCH {
            return Err(status(
                ErrorKind::InvalidArgument,
                format!("field `entries`: at most {MAX_LOG_BATCH} lines per call, got {}; send smaller batches", req.entries.len()),
            ));
        }
        let secrets = self.ctx.secrets.values_for(&fence.task_run_id).await;
        let lines: Vec<NewLogLine> = req
            .entries
            .into_iter()
            .map(|e| {
                let mut line = e.line;
                if line.len() > MAX_LOG_LINE {
                    let mut cut = MAX_LOG_LINE;
                    while !line.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    line.truncate(cut);
                    line.push_str(" [line truncated]");
                }
                let stream = if e.stream == "stderr" { "stderr" } else { "stdout" };
                NewLogLine { stream: stream.to_owned(), line: mask(&line, &secrets), time: time(e.time) }
            })
            .collect();
        self.ctx.state.append_logs(&fence, &lines).await.map_err(from_state)?;
        self.ctx.events.notify();
        Ok(Response::new(v1::AppendLogsResponse {}))
    }

    async fn complete_task(
        &self,
        request: Request<v1::CompleteTaskRequest>,
    ) -> Result<Response<v1::CompleteTaskResponse>, Status> {
        let req = request.into_inner();
        let fence = fence(req.attempt)?;
        let secrets = self.ctx.secrets.values_for(&fence.task_run_id).await;
        let output = mask_json(from_proto_opt(req.output.as_ref()), &secrets);
        match self.ctx.state.complete_attempt(&fence, output, Utc::now()).await {
            Ok(()) => {}
            Err(crate::state::Error::InvalidOutput(message)) => {
                // The output breaks the task's declared type: the attempt fails
                // (retries apply) and the worker hears why.
                let failure = Failure { kind: FailureKind::Task, error: message.clone(), non_retryable: false };
                self.ctx.state.fail_attempt(&fence, &failure, Utc::now()).await.map_err(from_state)?;
                self.ctx.scheduler.wake();
                self.ctx.mirror.wake();
                return Err(status(ErrorKind::InvalidArgument, message));
            }
            Err(e) => return Err(from_state(e)),
        }
        self.ctx.secrets.forget(&fence.task_run_id);
        self.ctx.events.notify();
        self.ctx.scheduler.wake();
        self.ctx.mirror.wake();
        Ok(Response::new(v1::CompleteTaskResponse {}))
    }

    async fn fail_task(
        &self,
        request: Request<v1::FailTaskRequest>,
    ) -> Result<Response<v1::FailTaskResponse>, Status> {
        let req = request.into_inner();
        let fence = fence(req.attempt)?;
        let secrets = self.ctx.secrets.values_for(&fence.task_run_id).await;
        let error = if req.error.is_empty() {
            "the task failed without a message".to_owned()
        } else {
            mask(&req.error, &secrets)
        };
        let failure = Failure { kind: FailureKind::Task, error, non_retryable: req.non_retryable };
        self.ctx.state.fail_attempt(&fence, &failure, Utc::now()).await.map_err(from_state)?;
        self.ctx.events.notify();
        self.ctx.scheduler.wake();
        self.ctx.mirror.wake();
        Ok(Response::new(v1::FailTaskResponse {}))
    }
}

