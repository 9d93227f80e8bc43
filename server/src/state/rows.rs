//! What the SQL backends share: value conversions (Unix milliseconds, JSON
//! text), row-to-record decoding over both row types, and the task run rows a
//! run starts with. The schemas of `migrations/sqlite` and
//! `migrations/postgres` have the same tables and columns (every integer
//! decodes as `i64`), which is what lets one decoder serve both.

use chrono::{DateTime, Utc};
use ork_domain::{Parallelism, RunStatus, TaskDefinition, TaskStatus, TriggerType};
use serde_json::Value;
use sqlx::Row;

use super::observe::{AttemptOutcome, Change, FinishedAttempt};
use super::{
    AttemptRecord, Error, Fence, LogRecord, OutboxEntry, OutboxKind, Result, RunRecord, TaskMetric,
    TaskRunRecord,
};

/// How many times an attempt lost to infrastructure is retried for free.
pub(crate) const MAX_LOST_RETRIES: i64 = 3;

/// The statuses of an attempt out with a worker.
pub(crate) const ACTIVE: [TaskStatus; 2] = [TaskStatus::Dispatched, TaskStatus::Running];

/// Typed column access, implemented for the row type of every backend.
pub(crate) trait Columns {
    fn text(&self, column: &str) -> Result<String>;
    fn opt_text(&self, column: &str) -> Result<Option<String>>;
    fn int(&self, column: &str) -> Result<i64>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>>;
}

macro_rules! impl_columns {
    ($row:ty) => {
        impl Columns for $row {
            fn text(&self, column: &str) -> Result<String> {
                Ok(self.try_get(column)?)
            }
            fn opt_text(&self, column: &str) -> Result<Option<String>> {
                Ok(self.try_get(column)?)
            }
            fn int(&self, column: &str) -> Result<i64> {
                Ok(self.try_get(column)?)
            }
            fn opt_int(&self, column: &str) -> Result<Option<i64>> {
                Ok(self.try_get(column)?)
            }
        }
    };
}

impl_columns!(sqlx::sqlite::SqliteRow);
impl_columns!(sqlx::postgres::PgRow);

// ---------- values ----------

pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_ms(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(v).unwrap_or_default()
}

pub(crate) fn opt_ms(v: Option<i64>) -> Option<DateTime<Utc>> {
    v.map(from_ms)
}

pub(crate) fn duration_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

pub(crate) fn json_text(v: &Value) -> String {
    v.to_string()
}

pub(crate) fn parse_json(text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| Error::Corrupt(format!("stored JSON: {e}")))
}

pub(crate) fn opt_json(text: Option<String>) -> Result<Option<Value>> {
    text.as_deref().map(parse_json).transpose()
}

/// A row count as the stats report it.
pub(crate) fn count(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn to_u32(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

pub(crate) fn opt_u32(v: Option<i64>) -> Option<u32> {
    v.map(to_u32)
}

pub(crate) fn task_status(s: &str) -> Result<TaskStatus> {
    TaskStatus::parse(s).ok_or_else(|| Error::Corrupt(format!("task status `{s}`")))
}

pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A number in [0, 1) for retry jitter; the clock's sub-second noise is
/// plenty for spreading retries, and keeps `rand` out of the build.
pub(crate) fn jitter_unit() -> f64 {
    f64::from(Utc::now().timestamp_subsec_nanos() % 1_000_000) / 1_000_000.0
}

// ---------- records ----------

pub(crate) fn run_record<R: Columns>(row: &R) -> Result<RunRecord> {
    let status = row.text("status")?;
    let trigger = row.text("triggered_by")?;
    Ok(RunRecord {
        id: row.text("id")?,
        workflow: row.text("workflow")?,
        workflow_version: row.text("workflow_version")?,
        status: RunStatus::parse(&status)
            .ok_or_else(|| Error::Corrupt(format!("run status `{status}`")))?,
        triggered_by: TriggerType::parse(&trigger)
            .ok_or_else(|| Error::Corrupt(format!("trigger `{trigger}`")))?,
        input: parse_json(&row.text("input")?)?,
        // The replica holding the lease, or the last one that did.
        owner: row.opt_text("owner")?,
        created_at: from_ms(row.int("created_at")?),
        started_at: opt_ms(row.opt_int("started_at")?),
        finished_at: opt_ms(row.opt_int("finished_at")?),
    })
}

/// The columns [`task_run_record`] reads.
pub(crate) const TASK_RUN_COLUMNS: &str = "id, run_id, task_name, status, attempt, max_retries, parallel_index, \
    parallel_count, executor, input, output, error, created_at, ready_at, dispatched_at, started_at, finished_at";

pub(crate) fn task_run_record<R: Columns>(row: &R) -> Result<TaskRunRecord> {
    Ok(TaskRunRecord {
        id: row.text("id")?,
        run_id: row.text("run_id")?,
        task_name: row.text("task_name")?,
        status: task_status(&row.text("status")?)?,
        attempt: to_u32(row.int("attempt")?),
        max_retries: to_u32(row.int("max_retries")?),
        parallel_index: opt_u32(row.opt_int("parallel_index")?),
        parallel_count: opt_u32(row.opt_int("parallel_count")?),
        executor: row.text("executor")?,
        input: opt_json(row.opt_text("input")?)?,
        output: opt_json(row.opt_text("output")?)?,
        error: row.opt_text("error")?,
        created_at: from_ms(row.int("created_at")?),
        ready_at: opt_ms(row.opt_int("ready_at")?),
        dispatched_at: opt_ms(row.opt_int("dispatched_at")?),
        started_at: opt_ms(row.opt_int("started_at")?),
        finished_at: opt_ms(row.opt_int("finished_at")?),
    })
}

pub(crate) fn attempt_record<R: Columns>(row: &R) -> Result<AttemptRecord> {
    Ok(AttemptRecord {
        task_run_id: row.text("task_run_id")?,
        attempt: to_u32(row.int("attempt")?),
        status: task_status(&row.text("status")?)?,
        error: row.opt_text("error")?,
        dispatched_at: from_ms(row.int("dispatched_at")?),
        started_at: opt_ms(row.opt_int("started_at")?),
        finished_at: opt_ms(row.opt_int("finished_at")?),
        metrics: Vec::new(),
    })
}

/// The query reading the metrics of `attempts` (rows of `attempt_metrics`):
/// its columns are `task_run_id, attempt, name, value`.
pub(crate) type MetricRow = (String, i64, String, f64);

/// Gives each attempt its recorded metrics (sorted by name).
pub(crate) fn attach_metrics(attempts: &mut [AttemptRecord], rows: Vec<MetricRow>) {
    if rows.is_empty() {
        return;
    }
    let mut by_attempt: std::collections::HashMap<(String, u32), Vec<TaskMetric>> =
        std::collections::HashMap::new();
    for (task_run_id, attempt, name, value) in rows {
        by_attempt
            .entry((task_run_id, to_u32(attempt)))
            .or_default()
            .push(TaskMetric { name, value });
    }
    for a in attempts {
        if let Some(mut metrics) = by_attempt.remove(&(a.task_run_id.clone(), a.attempt)) {
            metrics.sort_by(|x, y| x.name.cmp(&y.name));
            a.metrics = metrics;
        }
    }
}

/// The fence of the current attempt of a row with `id`, `attempt`, `token`.
pub(crate) fn current_fence<R: Columns>(row: &R) -> Result<Fence> {
    Ok(Fence {
        task_run_id: row.text("id")?,
        attempt: to_u32(row.int("attempt")?),
        token: row.opt_text("token")?.unwrap_or_default(),
    })
}

pub(crate) fn log_record<R: Columns>(row: &R) -> Result<LogRecord> {
    Ok(LogRecord {
        id: row.int("id")?,
        task_run_id: row.text("task_run_id")?,
        task_name: row.text("task_name")?,
        parallel_index: opt_u32(row.opt_int("parallel_index")?),
        attempt: to_u32(row.int("attempt")?),
        stream: row.text("stream")?,
        line: row.text("line")?,
        time: from_ms(row.int("time")?),
    })
}

pub(crate) fn outbox_entry<R: Columns>(row: &R) -> Result<OutboxEntry> {
    let kind = row.text("kind")?;
    Ok(OutboxEntry {
        id: row.int("id")?,
        kind: OutboxKind::parse(&kind)
            .ok_or_else(|| Error::Corrupt(format!("outbox kind `{kind}`")))?,
        key: row.text("key")?,
        attempt: opt_u32(row.opt_int("attempt")?),
    })
}

// ---------- new rows ----------

/// The columns of `task_runs t JOIN runs r` that [`fenced_row`] reads.
pub(crate) const FENCED_COLUMNS: &str = "t.status, t.attempt, t.token, t.run_id, t.task_name, \
    t.attempt_base, t.lost_count, t.parallel_index, t.ready_at, t.dispatched_at, t.started_at, \
    t.deadline_at, \
    r.workflow, r.workflow_version";

/// A task run row as the fenced worker calls see it.
pub(crate) struct FencedRow {
    pub run_id: String,
    pub task_name: String,
    pub status: TaskStatus,
    pub attempt_base: i64,
    pub lost_count: i64,
    pub workflow: String,
    pub workflow_version: String,
    pub parallel_index: Option<u32>,
    pub ready_at: Option<DateTime<Utc>>,
    /// Of the current attempt.
    pub dispatched_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub deadline_at: Option<DateTime<Utc>>,
}

pub(crate) fn fenced_row<R: Columns>(row: &R, status: TaskStatus) -> Result<FencedRow> {
    Ok(FencedRow {
        run_id: row.text("run_id")?,
        task_name: row.text("task_name")?,
        status,
        attempt_base: row.int("attempt_base")?,
        lost_count: row.int("lost_count")?,
        workflow: row.text("workflow")?,
        workflow_version: row.text("workflow_version")?,
        parallel_index: opt_u32(row.opt_int("parallel_index")?),
        ready_at: opt_ms(row.opt_int("ready_at")?),
        dispatched_at: opt_ms(row.opt_int("dispatched_at")?),
        started_at: opt_ms(row.opt_int("started_at")?),
        deadline_at: opt_ms(row.opt_int("deadline_at")?),
    })
}

impl FencedRow {
    /// How a failure of this row's attempt at `now` counts: a failure
    /// reported after the attempt's deadline is a timeout, whoever noticed
    /// it (the launched supervisor enforces the deadline itself).
    pub(crate) fn failure_outcome(
        &self,
        kind: super::FailureKind,
        now: DateTime<Utc>,
    ) -> AttemptOutcome {
        match kind {
            super::FailureKind::Task if self.deadline_at.is_some_and(|d| d <= now) => {
                AttemptOutcome::Timeout
            }
            other => AttemptOutcome::of_failure(other),
        }
    }

    /// The change of a worker starting this row's attempt at `now`.
    pub(crate) fn started(&self, now: DateTime<Utc>) -> Change {
        Change::AttemptStarted {
            workflow: self.workflow.clone(),
            task: self.task_name.clone(),
            ready_at: self.ready_at,
            started_at: now,
        }
    }

    /// The change of this row's attempt `fence` ending at `now`.
    pub(crate) fn finished(
        &self,
        fence: &Fence,
        outcome: AttemptOutcome,
        error: Option<&str>,
        metrics: &[TaskMetric],
        now: DateTime<Utc>,
    ) -> Change {
        Change::AttemptFinished(Box::new(FinishedAttempt {
            run_id: self.run_id.clone(),
            workflow: self.workflow.clone(),
            task: self.task_name.clone(),
            task_run_id: fence.task_run_id.clone(),
            attempt: fence.attempt,
            parallel_index: self.parallel_index,
            outcome,
            error: error.map(str::to_owned),
            dispatched_at: self.dispatched_at.unwrap_or(now),
            started_at: self.started_at.or(match outcome {
                // A success reported without a start counts as started now.
                AttemptOutcome::Success => Some(now),
                _ => None,
            }),
            finished_at: now,
            metrics: metrics.to_vec(),
        }))
    }
}

/// The columns of `task_runs` that [`cancelled_attempt`] reads.
pub(crate) const CANCELLED_COLUMNS: &str =
    "id, attempt, task_name, parallel_index, dispatched_at, started_at";

/// The change of an active attempt ended by its run's cancellation.
pub(crate) fn cancelled_attempt<R: Columns>(
    row: &R,
    run_id: &str,
    workflow: &str,
    now: DateTime<Utc>,
) -> Result<Change> {
    Ok(Change::AttemptFinished(Box::new(FinishedAttempt {
        run_id: run_id.to_owned(),
        workflow: workflow.to_owned(),
        task: row.text("task_name")?,
        task_run_id: row.text("id")?,
        attempt: to_u32(row.int("attempt")?),
        parallel_index: opt_u32(row.opt_int("parallel_index")?),
        outcome: AttemptOutcome::Cancelled,
        error: Some("cancelled".to_owned()),
        dispatched_at: opt_ms(row.opt_int("dispatched_at")?).unwrap_or(now),
        started_at: opt_ms(row.opt_int("started_at")?),
        finished_at: now,
        metrics: Vec::new(),
    })))
}

/// A run a transaction ended: what [`Change::RunFinished`] needs besides
/// the status.
pub(crate) struct EndedRun {
    pub workflow: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
}

impl EndedRun {
    pub(crate) fn change(
        self,
        run_id: &str,
        status: ork_domain::RunStatus,
        now: DateTime<Utc>,
    ) -> Change {
        Change::RunFinished {
            run_id: run_id.to_owned(),
            workflow: self.workflow,
            status,
            created_at: from_ms(self.created_at),
            started_at: opt_ms(self.started_at),
            finished_at: now,
        }
    }
}

/// One task run row to insert.
pub(crate) struct NewTaskRunRow<'a> {
    pub id: String,
    pub task: &'a TaskDefinition,
    pub parallel_index: Option<u32>,
    pub parallel_count: Option<u32>,
    pub item: Option<&'a Value>,
    pub status: TaskStatus,
    pub input: Option<String>,
    pub error: Option<String>,
    pub ready_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// The rows a task starts with: one per static instance, or one placeholder
/// that a dynamic fan-out replaces when it expands.
pub(crate) fn initial_rows(task: &TaskDefinition) -> Vec<NewTaskRunRow<'_>> {
    let row = |index: Option<u32>, count: Option<u32>| NewTaskRunRow {
        id: new_id(),
        task,
        parallel_index: index,
        parallel_count: count,
        item: None,
        status: TaskStatus::Pending,
        input: None,
        error: None,
        ready_at: None,
        finished_at: None,
    };
    match &task.parallel {
        Some(Parallelism::Static(n)) => (0..*n).map(|i| row(Some(i), Some(*n))).collect(),
        _ => vec![row(None, None)],
    }
}

/// The rows that replace a dynamic fan-out's placeholder: ready instances, or
/// failed ones whose input could not be resolved.
pub(crate) fn instance_rows<'a>(
    task: &'a TaskDefinition,
    instances: &'a [super::advance::NewInstance],
    now: DateTime<Utc>,
) -> Vec<NewTaskRunRow<'a>> {
    let count = u32::try_from(instances.len()).unwrap_or(u32::MAX);
    instances
        .iter()
        .map(|i| {
            let (status, input, error, ready_at, finished_at) = match &i.input {
                Ok(input) => (
                    TaskStatus::Pending,
                    Some(json_text(input)),
                    None,
                    Some(ms(now)),
                    None,
                ),
                Err(e) => (
                    TaskStatus::Failed,
                    None,
                    Some(e.clone()),
                    None,
                    Some(ms(now)),
                ),
            };
            NewTaskRunRow {
                id: new_id(),
                task,
                parallel_index: Some(i.index),
                parallel_count: Some(count),
                item: i.item.as_ref(),
                status,
                input,
                error,
                ready_at,
                finished_at,
            }
        })
        .collect()
}
