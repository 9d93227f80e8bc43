//! Attempt reports: everything a worker tells the server about its attempt,
//! and what the server reports for attempts nobody will (lost, timed out,
//! impossible to start). The gRPC handlers, the pool session stream and the
//! scheduler all report through [`Reports`], so each rule is written once:
//!
//! - text a task produced (log lines, errors, outputs) is masked for the
//!   task's secrets before it is stored, and long lines are cut;
//! - an output above the inline limit goes to the object store first and the
//!   database keeps a reference (checked against the task's `output_type`
//!   before it is uploaded);
//! - an output that breaks the declared type fails the attempt (retries
//!   apply) and the worker hears why;
//! - task metrics a report carries are checked (names, finite values, how
//!   many) and kept with the attempt's outcome;
//! - once an attempt is over, its pool slot and its cached secrets are freed.
//!
//! Reports are committed in batches (group commit, `queue.rs`): one
//! transaction for whatever arrived together, each caller answered after its
//! batch committed. Wake-ups are not this component's business: the store
//! fires the notifier after each commit, and the pool when a slot frees.

pub mod queue;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ork_proto::v1;
use serde_json::Value;

use crate::api::limits::{LogBudget, cut_line, output_refusal};
use crate::executor::WorkerPool;
use crate::secrets::{Secrets, mask, mask_json};
use crate::state::{
    self, Failure, FailureKind, Fence, NewLogLine, OUTPUT_REF_KEY, OutputStore, Report, StateStore,
    TaskMetric, normalize_task_metrics,
};

/// The metrics a report carries, checked: a bad name or value is the
/// worker's bug, refused with what to fix (and nothing recorded).
fn task_metrics(metrics: HashMap<String, f64>) -> Result<Vec<TaskMetric>, Error> {
    let metrics: Vec<TaskMetric> = metrics
        .into_iter()
        .map(|(name, value)| TaskMetric { name, value })
        .collect();
    normalize_task_metrics(&metrics)
        .map_err(|e| Error::InvalidArgument(format!("field `metrics`: {e}")))
}

/// Most lines in one batch of log lines.
pub const MAX_LOG_BATCH: usize = 5000;

/// Why a report was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    State(#[from] state::Error),
    /// The report itself is wrong; the message names the field and the fix.
    #[error("{0}")]
    InvalidArgument(String),
    /// Something the report needs is down for now; retrying may work.
    #[error("{0}")]
    Unavailable(String),
}

pub use queue::QueueOptions;

/// What [`Reports`] needs.
pub struct ReportsOptions {
    /// Outputs above this many bytes are stored by reference.
    pub inline_output_limit: usize,
    /// Sent to workers in their specs.
    pub heartbeat_interval: Duration,
    /// Longest log line stored; longer lines are cut with a marker.
    pub max_log_line_bytes: usize,
    /// Log bytes stored per attempt; later lines are dropped after a marker.
    pub max_log_bytes_per_attempt: u64,
    /// Largest output accepted (JSON bytes); a larger one fails the attempt.
    pub max_output_bytes: usize,
    /// How reports are batched into transactions.
    pub queue: QueueOptions,
}

/// The report component; cheap to share behind an `Arc`.
pub struct Reports {
    state: Arc<dyn StateStore>,
    queue: queue::Queue,
    secrets: Arc<Secrets>,
    pool: Arc<WorkerPool>,
    outputs: Arc<dyn OutputStore>,
    log_budget: LogBudget,
    options: ReportsOptions,
}

impl Reports {
    pub fn new(
        state: Arc<dyn StateStore>,
        secrets: Arc<Secrets>,
        pool: Arc<WorkerPool>,
        outputs: Arc<dyn OutputStore>,
        options: ReportsOptions,
    ) -> Self {
        Self {
            queue: queue::Queue::spawn(state.clone(), options.queue),
            state,
            secrets,
            pool,
            outputs,
            log_budget: LogBudget::new(options.max_log_bytes_per_attempt),
            options,
        }
    }

    /// The spec of an attempt, for a launched worker that fetches it. An env
    /// value that cannot be resolved fails the attempt for good, and the
    /// worker hears why.
    pub async fn spec(&self, fence: &Fence) -> Result<v1::TaskSpec, Error> {
        let spec = self.state.attempt_spec(fence).await?;
        match crate::executor::spec::build(spec, &self.secrets, self.options.heartbeat_interval) {
            Ok(spec) => Ok(spec),
            Err(message) => {
                self.end(
                    fence,
                    Failure {
                        kind: FailureKind::Task,
                        error: message.clone(),
                        non_retryable: true,
                    },
                )
                .await?;
                Err(Error::State(state::Error::FailedPrecondition(message)))
            }
        }
    }

    /// The worker began running the attempt.
    pub async fn start(&self, fence: &Fence) -> Result<(), Error> {
        self.commit(fence, Report::Start).await
    }

    /// The attempt is alive; true when it must stop (cancelled).
    pub async fn heartbeat(&self, fence: &Fence) -> Result<bool, Error> {
        Ok(self.queue.heartbeat(fence.clone()).await?)
    }

    /// Stores log lines: cut to `max_log_line_bytes`, masked, within the
    /// attempt's log budget, at most [`MAX_LOG_BATCH`] at once.
    pub async fn append_logs(&self, fence: &Fence, lines: Vec<NewLogLine>) -> Result<(), Error> {
        if lines.len() > MAX_LOG_BATCH {
            return Err(Error::InvalidArgument(format!(
                "field `entries`: at most {MAX_LOG_BATCH} lines per call, got {}; send smaller batches",
                lines.len()
            )));
        }
        if lines.is_empty() {
            return Ok(());
        }
        let secrets = self.secrets.values_for(&fence.task_run_id).await;
        let lines: Vec<NewLogLine> = lines
            .into_iter()
            .map(|mut l| {
                cut_line(&mut l.line, self.options.max_log_line_bytes);
                l.line = mask(&l.line, &secrets);
                l
            })
            .collect();
        let lines = self
            .log_budget
            .admit(&fence.task_run_id, fence.attempt, lines);
        Ok(self.state.append_logs(fence, &lines).await?)
    }

    /// The attempt's output: it succeeded; with the metrics it recorded.
    pub async fn complete(
        &self,
        fence: &Fence,
        output: Value,
        metrics: HashMap<String, f64>,
    ) -> Result<(), Error> {
        let metrics = task_metrics(metrics)?;
        let secrets = self.secrets.values_for(&fence.task_run_id).await;
        let output = mask_json(output, &secrets);
        if let Some(refusal) = output_refusal(&output, self.options.max_output_bytes) {
            return self.refuse_output(fence, refusal, metrics).await;
        }
        if output
            .as_object()
            .is_some_and(|o| o.contains_key(OUTPUT_REF_KEY))
        {
            return Err(Error::InvalidArgument(format!(
                "field `output`: the key `{OUTPUT_REF_KEY}` is reserved for outputs stored by reference; rename it"
            )));
        }
        let output = self.store_large_output(fence, output).await?;
        match self
            .commit(fence, Report::Complete(output, metrics.clone()))
            .await
        {
            Err(Error::State(state::Error::InvalidOutput(message))) => {
                self.refuse_output(fence, message, metrics).await
            }
            Ok(()) => {
                tracing::info!(task_run_id = %fence.task_run_id, attempt = fence.attempt, "attempt succeeded");
                Ok(())
            }
            other => other,
        }
    }

    /// An output the server will not store (wrong type, too large): the
    /// attempt fails (retries apply) and the worker hears why.
    async fn refuse_output(
        &self,
        fence: &Fence,
        message: String,
        metrics: Vec<TaskMetric>,
    ) -> Result<(), Error> {
        self.end_with(
            fence,
            Failure {
                kind: FailureKind::Task,
                error: message.clone(),
                non_retryable: false,
            },
            metrics,
        )
        .await?;
        Err(Error::InvalidArgument(message))
    }

    /// The attempt failed; `non_retryable` when retrying cannot help. With
    /// the metrics it recorded before it did.
    pub async fn fail(
        &self,
        fence: &Fence,
        error: &str,
        non_retryable: bool,
        metrics: HashMap<String, f64>,
    ) -> Result<(), Error> {
        let metrics = task_metrics(metrics)?;
        let error = if error.is_empty() {
            "the task failed without a message".to_owned()
        } else {
            error.to_owned()
        };
        self.end_with(
            fence,
            Failure {
                kind: FailureKind::Task,
                error,
                non_retryable,
            },
            metrics,
        )
        .await?;
        tracing::info!(task_run_id = %fence.task_run_id, attempt = fence.attempt, "attempt failed");
        Ok(())
    }

    /// Ends an attempt without a result: a worker's failure, or the server's
    /// verdict for an attempt nobody will report (lost, timed out, not
    /// startable). The error is masked like any text a task produced (a
    /// worker's stderr may echo its environment).
    pub async fn end(&self, fence: &Fence, failure: Failure) -> Result<(), state::Error> {
        self.end_with(fence, failure, Vec::new()).await
    }

    /// [`Reports::end`], with the metrics the task recorded.
    async fn end_with(
        &self,
        fence: &Fence,
        failure: Failure,
        metrics: Vec<TaskMetric>,
    ) -> Result<(), state::Error> {
        let secrets = self.secrets.values_for(&fence.task_run_id).await;
        let failure = Failure {
            error: mask(&failure.error, &secrets),
            ..failure
        };
        match self.commit(fence, Report::Fail(failure, metrics)).await {
            Ok(()) => Ok(()),
            Err(Error::State(e)) => Err(e),
            Err(e) => Err(state::Error::InvalidArgument(e.to_string())),
        }
    }

    /// Commits one report; once the attempt is over, frees what it held.
    async fn commit(&self, fence: &Fence, report: Report) -> Result<(), Error> {
        let ends = !matches!(report, Report::Start);
        self.queue.report(fence.clone(), report).await?;
        if ends {
            self.secrets.forget(&fence.task_run_id);
            self.log_budget.forget(&fence.task_run_id);
            // A pool worker's slot frees with its report.
            self.pool.finished(&fence.task_run_id);
        }
        Ok(())
    }

    /// Keeps an output above the inline limit in the object store and returns
    /// the marker the database stores instead. The object is written before
    /// the report commits, so a committed marker always points at content.
    async fn store_large_output(&self, fence: &Fence, output: Value) -> Result<Value, Error> {
        let bytes = serde_json::to_vec(&output).unwrap_or_default();
        if bytes.len() <= self.options.inline_output_limit {
            return Ok(output);
        }
        let key = crate::objects::layout::large_output(&fence.task_run_id, fence.attempt)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?
            .to_string();
        let size = bytes.len();
        let marker = serde_json::json!({ OUTPUT_REF_KEY: { "key": key, "bytes": size } });
        // Nothing is written for a caller that does not hold the attempt's
        // token: the fence is checked first (a heartbeat is that check, and
        // the caller is indeed alive). An attempt that already ended with
        // this number is a repeated report whose reply was lost (or a late
        // one): its object is not written again, and the report itself
        // decides, token and all, whether it is accepted.
        match self.queue.heartbeat(fence.clone()).await {
            Ok(_) => {}
            Err(state::Error::Stale {
                current_attempt, ..
            }) if current_attempt == fence.attempt => return Ok(marker),
            Err(e) => return Err(e.into()),
        }
        // The output's type is checked before anything is written.
        self.state.check_output(fence, &output).await?;
        self.outputs.put(&key, bytes).await.map_err(|e| {
            Error::Unavailable(format!(
                "could not store the {size}-byte output in the object store: {e}; retry"
            ))
        })?;
        Ok(marker)
    }
}
