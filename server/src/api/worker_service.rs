//! `ork.v1.WorkerService`: the fenced calls every worker makes for its
//! attempt, and the pool `Session` stream. Each method converts between proto
//! and the report component ([`crate::reports::Reports`]), which holds every
//! rule about reports.

use chrono::{DateTime, Utc};
use ork_proto::json::from_proto_opt;
use ork_proto::v1::{self, worker_service_server::WorkerService};
use std::collections::BTreeSet;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::ApiContext;
use super::error::{ErrorKind, from_report, status};
use crate::state::{Failure, FailureKind, Fence, NewLogLine};

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

fn time(t: Option<pbjson_types::Timestamp>) -> DateTime<Utc> {
    t.as_ref()
        .and_then(ork_proto::time::from_proto)
        .unwrap_or_else(Utc::now)
}

/// Most slots one pool worker may announce.
const MAX_SLOTS: u32 = 1024;

/// The reports of one attempt in flight, each waiting for the one before.
type Pending = futures::future::Shared<futures::future::BoxFuture<'static, ()>>;

/// Longest a closing session waits for its reports in flight.
const REPORTS_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads a session's messages and pings it until it closes, goes silent for
/// three pings, or the server stops; then fails its attempts as lost so they
/// are retried at once.
///
/// Reports are applied concurrently (so the queue can commit many together),
/// but the reports of one attempt in the order they came: each waits for the
/// previous one of its attempt.
async fn watch_session(
    ctx: ApiContext,
    id: u64,
    owner: Option<String>,
    mut inbound: Streaming<v1::SessionRequest>,
    tx: crate::executor::pool::SessionSender,
) {
    use futures::FutureExt as _;
    let mut ping = tokio::time::interval(ctx.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_seen = tokio::time::Instant::now();
    let mut nonce = 0u64;
    let mut stopping = ctx.events.subscribe();
    let mut pending: std::collections::HashMap<String, Pending> = Default::default();
    let reason = loop {
        tokio::select! {
            message = inbound.message() => match message {
                Ok(Some(m)) => {
                    last_seen = tokio::time::Instant::now();
                    ctx.pool.seen(id);
                    match m.message {
                        Some(v1::session_request::Message::Drain(_)) => ctx.pool.drain(id),
                        Some(v1::session_request::Message::Report(report)) => {
                            let key = report
                                .attempt
                                .as_ref()
                                .map(|a| a.task_run_id.clone())
                                .unwrap_or_default();
                            let last = report.outcome.is_some();
                            let before = pending.remove(&key);
                            let (ctx, tx, owner) = (ctx.clone(), tx.clone(), owner.clone());
                            let work = async move {
                                if let Some(before) = before {
                                    before.await;
                                }
                                let result = session_report(&ctx, owner.as_deref(), report).await;
                                let message = v1::SessionResponse {
                                    message: Some(v1::session_response::Message::Result(result)),
                                };
                                let _ = tx.send(Ok(message)).await;
                            }
                            .boxed()
                            .shared();
                            tokio::spawn(work.clone());
                            if !last {
                                pending.insert(key, work);
                            }
                            // Reports already applied need no waiting for.
                            pending.retain(|_, w| w.peek().is_none());
                        }
                        _ => {}
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
    // Reports the worker sent before it left still count.
    let _ = tokio::time::timeout(
        REPORTS_DRAIN,
        futures::future::join_all(pending.into_values()),
    )
    .await;
    let lost = ctx.pool.detach(id);
    for fence in &lost {
        let failure = Failure {
            kind: FailureKind::Lost,
            error: format!("{reason} while running this attempt"),
            non_retryable: false,
        };
        match ctx.reports.end(fence, failure).await {
            Ok(()) | Err(crate::state::Error::Stale { .. }) => {}
            Err(e) => tracing::warn!(error = %e, "could not fail an attempt of a closed session"),
        }
    }
}

/// Applies one report of a pool worker: its log lines, then its outcome.
/// With authentication, a session reports only the attempts pushed to a
/// session of its own worker token (`owner`), as the auth layer checks a
/// pool worker's unary calls.
async fn session_report(
    ctx: &ApiContext,
    owner: Option<&str>,
    report: v1::SessionReport,
) -> v1::SessionReportResult {
    let id = report.id;
    let applied = async {
        let fence = fence(report.attempt)?;
        if let Some(owner) = owner
            && ctx.pool.owner_of(&fence.task_run_id, fence.attempt).flatten().as_deref()
                != Some(owner)
        {
            return Err(status(
                ErrorKind::PermissionDenied,
                format!(
                    "attempt {} of task run {} was not pushed to a session of this worker token on this server; a pool worker reports only the attempts pushed to its own session",
                    fence.attempt, fence.task_run_id
                ),
            ));
        }
        if !report.logs.is_empty() {
            ctx.reports
                .append_logs(&fence, log_lines(report.logs))
                .await
                .map_err(from_report)?;
        }
        match report.outcome {
            None => Ok(()),
            Some(v1::session_report::Outcome::Success(success)) => ctx
                .reports
                .complete(
                    &fence,
                    from_proto_opt(success.output.as_ref()),
                    success.metrics,
                )
                .await
                .map_err(from_report),
            Some(v1::session_report::Outcome::Failure(failure)) => ctx
                .reports
                .fail(
                    &fence,
                    &failure.error,
                    failure.non_retryable,
                    failure.metrics,
                )
                .await
                .map_err(from_report),
        }
    }
    .await;
    match applied {
        Ok(()) => v1::SessionReportResult {
            id,
            code: 0,
            message: String::new(),
        },
        Err(status) => v1::SessionReportResult {
            id,
            code: status.code() as i32,
            message: status.message().to_owned(),
        },
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
            .attach(name, owner.clone(), handlers, attach.slots, tx.clone());
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
                    session_reports: true,
                },
            )),
        };
        // The channel is fresh and has room: this cannot block.
        let _ = tx.send(Ok(attached)).await;
        tokio::spawn(watch_session(self.ctx.clone(), id, owner, inbound, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_task_spec(
        &self,
        request: Request<v1::GetTaskSpecRequest>,
    ) -> Result<Response<v1::GetTaskSpecResponse>, Status> {
        let fence = fence(request.into_inner().attempt)?;
        let spec = self.ctx.reports.spec(&fence).await.map_err(from_report)?;
        Ok(Response::new(v1::GetTaskSpecResponse { spec: Some(spec) }))
    }

    async fn start_task(
        &self,
        request: Request<v1::StartTaskRequest>,
    ) -> Result<Response<v1::StartTaskResponse>, Status> {
        let fence = fence(request.into_inner().attempt)?;
        self.ctx.reports.start(&fence).await.map_err(from_report)?;
        Ok(Response::new(v1::StartTaskResponse {}))
    }

    async fn heartbeat(
        &self,
        request: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let fence = fence(request.into_inner().attempt)?;
        let cancelled = self
            .ctx
            .reports
            .heartbeat(&fence)
            .await
            .map_err(from_report)?;
        Ok(Response::new(v1::HeartbeatResponse { cancelled }))
    }

    async fn append_logs(
        &self,
        request: Request<v1::AppendLogsRequest>,
    ) -> Result<Response<v1::AppendLogsResponse>, Status> {
        let req = request.into_inner();
        let fence = fence(req.attempt)?;
        self.ctx
            .reports
            .append_logs(&fence, log_lines(req.entries))
            .await
            .map_err(from_report)?;
        Ok(Response::new(v1::AppendLogsResponse {}))
    }

    async fn complete_task(
        &self,
        request: Request<v1::CompleteTaskRequest>,
    ) -> Result<Response<v1::CompleteTaskResponse>, Status> {
        let req = request.into_inner();
        let fence = fence(req.attempt)?;
        let output = from_proto_opt(req.output.as_ref());
        self.ctx
            .reports
            .complete(&fence, output, req.metrics)
            .await
            .map_err(from_report)?;
        Ok(Response::new(v1::CompleteTaskResponse {}))
    }

    async fn fail_task(
        &self,
        request: Request<v1::FailTaskRequest>,
    ) -> Result<Response<v1::FailTaskResponse>, Status> {
        let req = request.into_inner();
        let fence = fence(req.attempt)?;
        self.ctx
            .reports
            .fail(&fence, &req.error, req.non_retryable, req.metrics)
            .await
            .map_err(from_report)?;
        Ok(Response::new(v1::FailTaskResponse {}))
    }
}

/// Log entries as the store takes them: a stream of `stderr` or `stdout`,
/// stamped with the worker's time (or the server's, when missing).
pub(crate) fn log_lines(entries: Vec<v1::LogEntry>) -> Vec<NewLogLine> {
    entries
        .into_iter()
        .map(|e| NewLogLine {
            stream: if e.stream == "stderr" {
                "stderr"
            } else {
                "stdout"
            }
            .to_owned(),
            line: e.line,
            time: time(e.time),
        })
        .collect()
}
