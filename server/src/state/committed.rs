//! What committed transitions did, as facts for the observers outside the
//! store (Prometheus metrics, run and attempt trace spans).
//!
//! `transitions.rs` gathers the [`Transition`]s of one transaction while it
//! runs; the store hands them to the committed notifier
//! ([`crate::notify::Notifier::committed`]) only after the commit succeeded,
//! so an observer sees each transition exactly once and never one that
//! rolled back. A report repeated after a lost reply changes nothing and so
//! tells nothing.

use chrono::{DateTime, Utc};
use ork_domain::RunStatus;

use super::{FailureKind, TaskMetric};

/// How an attempt ended, as metrics and traces label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    Success,
    /// The task reported an error, or it could not be started.
    Failed,
    /// It ran past `timeout_seconds`.
    Timeout,
    /// Its worker vanished (no heartbeat, process gone, session closed).
    Lost,
    /// Its run was cancelled.
    Cancelled,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failed => "failed",
            Self::Timeout => "timeout",
            Self::Lost => "lost",
            Self::Cancelled => "cancelled",
        }
    }

    /// The outcome of an attempt failed for `kind`.
    pub fn of_failure(kind: FailureKind) -> Self {
        match kind {
            FailureKind::Task | FailureKind::Dispatch => Self::Failed,
            FailureKind::Timeout => Self::Timeout,
            FailureKind::Lost => Self::Lost,
        }
    }
}

/// One committed transition.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// A run began running: created without waiting, promoted from `pending`
    /// (its workflow's `concurrency`), or re-opened by a retry.
    RunStarted { run_id: String, workflow: String },
    /// A run ended.
    RunFinished {
        run_id: String,
        workflow: String,
        status: RunStatus,
        created_at: DateTime<Utc>,
        started_at: Option<DateTime<Utc>>,
        finished_at: DateTime<Utc>,
    },
    /// An attempt started: its worker said so, or (a pool attempt) its claim
    /// assigned it to a session.
    AttemptStarted {
        workflow: String,
        task: String,
        /// When the task run became ready (or its retry delay ended).
        ready_at: Option<DateTime<Utc>>,
        started_at: DateTime<Utc>,
    },
    /// An attempt ended.
    AttemptFinished(Box<FinishedAttempt>),
    /// A schedule fire created a run (the `RunStarted` of that run follows
    /// unless it waits on its workflow's `concurrency`).
    ScheduleFired { workflow: String },
}

/// The facts of an ended attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedAttempt {
    pub run_id: String,
    pub workflow: String,
    pub task: String,
    pub task_run_id: String,
    pub attempt: u32,
    pub parallel_index: Option<u32>,
    pub outcome: AttemptOutcome,
    pub error: Option<String>,
    pub dispatched_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
    /// The figures the task recorded (`ctx.metrics.record`, `ORK_METRICS`).
    pub metrics: Vec<TaskMetric>,
}
