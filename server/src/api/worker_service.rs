//! `ork.v1.WorkerService`: the fenced calls every worker makes for its attempt.

use chrono::{DateTime, Utc};
use ork_proto::json::from_proto_opt;
use ork_proto::v1::{self, worker_service_server::WorkerService};
use std::collections::BTreeSet;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::ApiContext;
use super::error::{ErrorKind, from_state, status};
use crate::executor::spec::{SpecError, task_spec};
use crate::secrets::{mask, mask_json};
use crate::state::{Failure, FailureKind, Fence, NewLogLine, TaskMetric, normalize_task_metrics};

/// Most lines in one AppendLogs call.
const MAX_LOG_BATCH: usize = 5000;

pub struct WorkerApi {
    pub(crate) ctx: ApiContext,
}

fn fence(attempt: Option<v1::AttemptRef>) -> Result<Fence, Status> {
    let a = attempt.ok_or_else(|| {
        status(
            ErrorKind::InvalidArgument,
            "field `attempt`: every worker call names its attempt (task_run_id, attempt, token)",
        )
    })?;
    if a.task_run_id.is_empty() || a.token.is_empty() || a.attempt == 0 {
        return Err(status(
            ErrorKind::InvalidArgument,
            "field `attempt`: task_run_id, attempt (from 1) and token are all required; use the values the executor passed (ORK_TASK_RUN_ID, ORK_ATTEMPT, ORK_TOKEN)",
        ));
    }
    // Log lines of this call (JSON logs show span fields) name the task run.
    tracing::Span::current().record("task_run_id", a.task_run_id.as_str());
    Ok(Fence {
        task_run_id: a.task_run_id,
        attempt: a.attempt,
        token: a.token,
    })
}

/// The metrics a report carries, checked: a bad name or value is the
/// worker's bug, refused with what to fix (and nothing recorded).
fn task_metrics(
    metrics: std::collections::HashMap<String, f64>,
) -> Result<Vec<TaskMetric>, Status> {
    let metrics: Vec<TaskMetric> = metrics
        .into_iter()
        .map(|(name, value)| TaskMetric { name, value })
        .collect();
    normalize_task_metrics(&metrics)
        .map_err(|e| status(ErrorKind::InvalidArgument, format!("field `metrics`: {e}")))
}

fn time(t: Option<pbjson_types::Timestamp>) -> DateTime<Utc> {
    t.as_ref()
        .and_then(ork_proto::time::from_proto)
        .unwrap_or_else(Utc::now)
}

/// Most slots one pool worker may announce.
const MAX_SLOTS: u32 = 1024;

/// Reads a session's messages and pings it until it closes, goes silent for
/// three pings, or the server stops; then fails its attempts as lost so they
/// are retried at once.
async fn watch_session(
    ctx: ApiContext,
    id: u64,
    mut inbound: Streaming<v1::SessionRequest>,
    tx: crate::executor::pool::SessionSender,
) {
    let mut ping = tokio::time::interval(ctx.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_seen = tokio::time::Instant::now();
    let mut nonce = 0u64;
    let mut stopping = ctx.events.subscribe();
    let reason = loop {
        tokio::select! {
            message = inbound.message() => match message {
                Ok(Some(m)) => {
                    last_seen = tokio::time::Instant::now();
                    ctx.pool.seen(id);
                    if let Some(v1::session_request::Message::Drain(_)) = m.message {
                        ctx.pool.drain(id);
                    }
                }
                Ok(None) => break "the pool worker closed its session",
                Err(_) => break "the pool worker's session broke",
            },
            _ = ping.tick() => {
                if last_seen.elapsed() > ctx.ping_interval * 3 {
                    break "the pool worker stopped answering pings";
                }
                nonce += 1;
                let message = v1::SessionResponse {
                    message: Some(v1::session_response::Message::Ping(v1::SessionPing { nonce })),
                };
                if tx.send(Ok(message)).await.is_err() {
                    break "the pool worker's session broke";
                }
            }
            open = stopping.wait() => if !open {
                break "the server is stopping";
            },
        }
    };
    let lost = ctx.pool.detach(id);
    for fence in &lost {
        let failure = Failure {
            kind: FailureKind::Lost,
            error: format!("{reason} while running this attempt"),
            non_retryable: false,
            metrics: Vec::new(),
        };
        ctx.secrets.forget(&fence.task_run_id);
        match ctx.state.fail_attempt(fence, &failure, Utc::now()).await {
            Ok(()) | Err(crate::state::Error::Stale { .. }) => {}
            Err(e) => tracing::warn!(error = %e, "could not fail an attempt of a closed session"),
        }
    }
    ctx.events.notify();
    ctx.scheduler.wake();
    ctx.mirror.wake();
}

impl WorkerApi {
    /// An output the server will not store (wrong type, too large): the
    /// attempt fails (retries apply) and the worker hears why.
    async fn refuse_output<T>(
        &self,
        fence: &Fence,
        message: String,
        metrics: Vec<TaskMetric>,
    ) -> Result<T, Status> {
        let failure = Failure {
            kind: FailureKind::Task,
            error: message.clone(),
            non_retryable: false,
            metrics,
        };
        self.ctx
            .state
            .fail_attempt(fence, &failure, Utc::now())
            .await
            .map_err(from_state)?;
        self.ctx.pool.finished(&fence.task_run_id);
        self.ctx.scheduler.wake();
        self.ctx.mirror.wake();
        Err(status(ErrorKind::InvalidArgument, message))
    }

    /// Keeps an output above the inline limit in the object store and returns
    /// the marker the database stores instead. The object is written before
    /// the report commits, so a committed marker always points at content.
    async fn store_large_output(
        &self,
        fence: &Fence,
        output: serde_json::Value,
    ) -> Result<serde_json::Value, Status> {
        let bytes = serde_json::to_vec(&output).unwrap_or_default();
        if bytes.len() <= self.ctx.inline_output_limit {
            return Ok(output);
        }
        let key = crate::objects::layout::large_output(&fence.task_run_id, fence.attempt)
            .map_err(|e| status(ErrorKind::InvalidArgument, e.to_string()))?
            .to_string();
        let size = bytes.len();
        let marker =
            serde_json::json!({ crate::state::OUTPUT_REF_KEY: { "key": key, "bytes": size } });
        // Nothing is written for a caller that does not hold the attempt's
        // token: the fence is checked first (a heartbeat is that check, and
        // the caller is indeed alive). An attempt that already ended with
        // this number is a repeated report whose reply was lost (or a late
        // one): its object is not written again, and the report itself
        // decides, token and all, whether it is accepted.
        match self.ctx.state.heartbeat(fence, Utc::now()).await {
            Ok(_) => {}
            Err(crate::state::Error::Stale {
                current_attempt, ..
            }) if current_attempt == fence.attempt => {
                return Ok(marker);
            }
            Err(e) => return Err(from_state(e)),
        }
        // The output's type is checked before anything is written.
        self.ctx
            .state
            .check_output(fence, &output)
            .await
            .map_err(from_state)?;
        self.ctx.outputs.put(&key, bytes).await.map_err(|e| {
            status(
                ErrorKind::Unavailable,
                format!("could not store the {size}-byte output in the object store: {e}; retry"),
            )
        })?;
        Ok(marker)
    }
}

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    type SessionStream = ReceiverStream<Result<v1::SessionResponse, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<v1::SessionRequest>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        // The token that attaches the session owns its attempts (auth layer).
        let owner = crate::auth::Principal::of_grpc(&request)
            .token()
            .map(|t| t.id.clone());
        let mut inbound = request.into_inner();
        let first = inbound.message().await?;
        let Some(v1::SessionRequest {
            message: Some(v1::session_request::Message::Attach(attach)),
        }) = first
        else {
            return Err(status(
                ErrorKind::InvalidArgument,
                "a session starts with `attach` (worker name, handlers, slots)",
            ));
        };
        let handlers: BTreeSet<String> = attach
            .handlers
            .into_iter()
            .filter(|h| !h.is_empty())
            .collect();
        if handlers.is_empty() {
            return Err(status(
                ErrorKind::InvalidArgument,
                "field `attach.handlers`: name at least one handler this worker runs",
            ));
        }
        if attach.slots == 0 || attach.slots > MAX_SLOTS {
            return Err(status(
                ErrorKind::InvalidArgument,
                format!(
                    "field `attach.slots`: must be between 1 and {MAX_SLOTS}, got {}",
                    attach.slots
                ),
            ));
        }
        let capacity = usize::try_from(attach.slots).unwrap_or(1) * 2 + 16;
        let (tx, rx) = mpsc::channel(capacity);
        let name = if attach.name.is_empty() {
            "worker".to_owned()
        } else {
            attach.name
        };
        let id = self
            .ctx
            .pool
            .attach(name, owner, handlers, attach.slots, tx.clone());
        let attached = v1::SessionResponse {
            message: Some(v1::session_response::Message::Attached(
                v1::SessionAttached {
                    session_id: id.to_string(),
                    heartbeat_interval_seconds: u32::try_from(
                        self.ctx.heartbeat_interval.as_secs(),
                    )
                    .unwrap_or(5)
                    .max(1),
                    ping_interval_seconds: u32::try_from(self.ctx.ping_interval.as_secs())
                        .unwrap_or(5)
                        .max(1),
                },
            )),
        };
        // The channel is fresh and has room: this cannot block.
        let _ = tx.send(Ok(attached)).await;
        self.ctx.scheduler.wake();
        tokio::spawn(watch_session(self.ctx.clone(), id, inbound, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_task_spec(
        &self,
        request: Request<v1::GetTaskSpecRequest>,
    ) -> Result<Response<v1::GetTaskSpecResponse>, Status> {
        let fence = fence(request.into_inner().attempt)?;
        let spec = task_spec(
            self.ctx.state.as_ref(),
            &self.ctx.secrets,
            self.ctx.heartbeat_interval,
            &fence,
        )
        .await;
        match spec {
            Ok(spec) => Ok(Response::new(v1::GetTaskSpecResponse { spec: Some(spec) })),
            Err(SpecError::State(e)) => Err(from_state(e)),
            Err(SpecError::Env(message)) => {
                let failure = Failure {
                    kind: FailureKind::Task,
                    error: message.clone(),
                    non_retryable: true,
                    metrics: Vec::new(),
                };
                self.ctx
                    .state
                    .fail_attempt(&fence, &failure, Utc::now())
                    .await
                    .map_err(from_state)?;
                self.ctx.events.notify();
                self.ctx.scheduler.wake();
                self.ctx.mirror.wake();
                Err(status(ErrorKind::FailedPrecondition, message))
            }
        }
    }

    async fn start_task(
        &self,
        request: Request<v1::StartTaskRequest>,
    ) -> Result<Response<v1::StartTaskResponse>, Status> {
        let fence = fence(request.into_inner().attempt)?;
        self.ctx
            .state
            .start_attempt(&fence, Utc::now())
            .await
            .map_err(from_state)?;
        self.ctx.events.notify();
        self.ctx.mirror.wake();
        Ok(Response::new(v1::StartTaskResponse {}))
    }

    async fn heartbeat(
        &self,
        request: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let fence = fence(request.into_inner().attempt)?;
        let cancelled = self
            .ctx
            .state
            .heartbeat(&fence, Utc::now())
            .await
            .map_err(from_state)?;
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
                format!(
                    "field `entries`: at most {MAX_LOG_BATCH} lines per call, got {}; send smaller batches",
                    req.entries.len()
                ),
            ));
        }
        let secrets = self.ctx.secrets.values_for(&fence.task_run_id).await;
        let lines: Vec<NewLogLine> = req
            .entries
            .into_iter()
            .map(|e| {
                let mut line = e.line;
                super::limits::cut_line(&mut line, self.ctx.limits.max_log_line_bytes);
                let stream = if e.stream == "stderr" {
                    "stderr"
                } else {
                    "stdout"
                };
                NewLogLine {
                    stream: stream.to_owned(),
                    line: mask(&line, &secrets),
                    time: time(e.time),
                }
            })
            .collect();
        let lines = self
            .ctx
            .log_budget
            .admit(&fence.task_run_id, fence.attempt, lines);
        self.ctx
            .state
            .append_logs(&fence, &lines)
            .await
            .map_err(from_state)?;
        self.ctx.events.notify();
        Ok(Response::new(v1::AppendLogsResponse {}))
    }

    async fn complete_task(
        &self,
        request: Request<v1::CompleteTaskRequest>,
    ) -> Result<Response<v1::CompleteTaskResponse>, Status> {
        let req = request.into_inner();
        let fence = fence(req.attempt)?;
        let metrics = task_metrics(req.metrics)?;
        let secrets = self.ctx.secrets.values_for(&fence.task_run_id).await;
        let output = mask_json(from_proto_opt(req.output.as_ref()), &secrets);
        if let Some(refusal) =
            super::limits::output_refusal(&output, self.ctx.limits.max_output_bytes)
        {
            return self.refuse_output(&fence, refusal, metrics).await;
        }
        if output
            .as_object()
            .is_some_and(|o| o.contains_key(crate::state::OUTPUT_REF_KEY))
        {
            return Err(status(
                ErrorKind::InvalidArgument,
                format!(
                    "field `output`: the key `{}` is reserved for outputs stored by reference; rename it",
                    crate::state::OUTPUT_REF_KEY
                ),
            ));
        }
        let output = self.store_large_output(&fence, output).await?;
        match self
            .ctx
            .state
            .complete_attempt(&fence, output, &metrics, Utc::now())
            .await
        {
            Ok(()) => {}
            Err(crate::state::Error::InvalidOutput(message)) => {
                return self.refuse_output(&fence, message, metrics).await;
            }
            Err(e) => return Err(from_state(e)),
        }
        tracing::info!(attempt = fence.attempt, "attempt succeeded");
        self.ctx.secrets.forget(&fence.task_run_id);
        self.ctx.log_budget.forget(&fence.task_run_id);
        // A pool worker's slot frees with its report.
        self.ctx.pool.finished(&fence.task_run_id);
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
        let metrics = task_metrics(req.metrics)?;
        let secrets = self.ctx.secrets.values_for(&fence.task_run_id).await;
        let error = if req.error.is_empty() {
            "the task failed without a message".to_owned()
        } else {
            mask(&req.error, &secrets)
        };
        let failure = Failure {
            kind: FailureKind::Task,
            error,
            non_retryable: req.non_retryable,
            metrics,
        };
        self.ctx
            .state
            .fail_attempt(&fence, &failure, Utc::now())
            .await
            .map_err(from_state)?;
        tracing::info!(attempt = fence.attempt, "attempt failed");
        self.ctx.secrets.forget(&fence.task_run_id);
        self.ctx.log_budget.forget(&fence.task_run_id);
        self.ctx.pool.finished(&fence.task_run_id);
        self.ctx.events.notify();
        self.ctx.scheduler.wake();
        self.ctx.mirror.wake();
        Ok(Response::new(v1::FailTaskResponse {}))
    }
}
