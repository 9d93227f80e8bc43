//! What committed transactions changed, told to the observers outside the
//! store (Prometheus metrics, run and attempt trace spans).
//!
//! A backend collects the [`Change`]s of one transaction while it runs and
//! hands them to the [`CommitObserver`] only after the commit succeeded, so an
//! observer counts each transition exactly once and never one that rolled
//! back. A report repeated after a lost reply changes nothing and so reports
//! nothing. Observers are called on the committing task: they must be quick
//! and must not block (counters, a channel send).

use std::sync::{Arc, OnceLock};

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
pub enum Change {
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
    /// A worker started an attempt (or reported it without starting it).
    AttemptStarted {
        workflow: String,
        task: String,
        /// When the task run became ready (or its retry delay ended).
        ready_at: Option<DateTime<Utc>>,
        started_at: DateTime<Utc>,
    },
    /// An attempt ended.
    AttemptFinished(Box<FinishedAttempt>),
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

/// Told every committed transaction's changes, in commit order per store.
pub trait CommitObserver: Send + Sync + 'static {
    fn committed(&self, changes: &[Change]);
}

/// Tells several observers, in order.
pub struct ObserverList(pub Vec<Arc<dyn CommitObserver>>);

impl CommitObserver for ObserverList {
    fn committed(&self, changes: &[Change]) {
        for observer in &self.0 {
            observer.committed(changes);
        }
    }
}

/// The observer slot of a store: empty until the server sets it, so stores
/// opened by tools and tests tell nobody.
#[derive(Default)]
pub(crate) struct ObserverSlot(OnceLock<Arc<dyn CommitObserver>>);

impl ObserverSlot {
    pub(crate) fn set(&self, observer: Arc<dyn CommitObserver>) {
        let _ = self.0.set(observer);
    }

    /// Hands a committed transaction's changes to the observer.
    pub(crate) fn committed(&self, changes: &[Change]) {
        if !changes.is_empty()
            && let Some(observer) = self.0.get()
        {
            observer.committed(changes);
        }
    }
}
