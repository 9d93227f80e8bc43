//! Value conversions (Unix milliseconds, JSON text), row-to-record decoding
//! over both backends' rows ([`Columns`]), fresh ids and tokens, and the task
//! run rows a run starts with.

use chrono::{DateTime, Utc};
use ork_domain::{Parallelism, RunStatus, TaskDefinition, TaskStatus, TriggerType};
use serde_json::Value;

use super::sql::{CHUNK, Columns, Conn, Query};
use super::{
    AttemptRecord, Error, Fence, LogRecord, OutboxEntry, OutboxKind, Result, RunRecord, TaskMetric,
    TaskRunRecord, Transition,
};

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

/// A new attempt token: 128 bits from the operating system's CSPRNG, as 32
/// hex digits. Whoever holds it may report for its attempt, so it must not be
/// guessable from anything else (ids, times, other tokens).
pub(crate) fn new_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::Corrupt(format!("the system random source failed: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A number in [0, 1) that spreads retry delays.
pub(crate) fn jitter_unit() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // Only the spread of retries depends on it: the clock's noise will do.
        return f64::from(Utc::now().timestamp_subsec_nanos() % 1_000_000) / 1_000_000.0;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
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
        labels: serde_json::from_str(&row.text("labels")?)
            .map_err(|e| Error::Corrupt(format!("stored run labels: {e}")))?,
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

/// Gives each attempt its recorded metrics, from rows of `attempt_metrics`
/// (`task_run_id, attempt, name, value`), sorted by name.
pub(crate) fn attach_metrics<R: Columns>(attempts: &mut [AttemptRecord], rows: &[R]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut by_attempt: std::collections::HashMap<(String, u32), Vec<TaskMetric>> =
        std::collections::HashMap::new();
    for r in rows {
        by_attempt
            .entry((r.text("task_run_id")?, to_u32(r.int("attempt")?)))
            .or_default()
            .push(TaskMetric {
                name: r.text("name")?,
                value: r.float("value")?,
            });
    }
    for a in attempts {
        if let Some(mut metrics) = by_attempt.remove(&(a.task_run_id.clone(), a.attempt)) {
            metrics.sort_by(|x, y| x.name.cmp(&y.name));
            a.metrics = metrics;
        }
    }
    Ok(())
}

/// The end of run `run_id` with `status` at `now`, from its row's
/// `workflow`, `created_at` and `started_at`.
pub(crate) fn run_finished<R: Columns>(
    row: &R,
    run_id: &str,
    status: RunStatus,
    now: DateTime<Utc>,
) -> Result<Transition> {
    Ok(Transition::RunFinished {
        run_id: run_id.to_owned(),
        workflow: row.text("workflow")?,
        status,
        created_at: from_ms(row.int("created_at")?),
        started_at: opt_ms(row.opt_int("started_at")?),
        finished_at: now,
    })
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

// ---------- inserts ----------

/// Records what the mirror must bring up to date, in the caller's transaction.
pub(crate) async fn insert_outbox<C: Conn>(
    tx: &mut C,
    kind: OutboxKind,
    key: &str,
    attempt: Option<u32>,
) -> Result<()> {
    tx.execute(
        Query::new("INSERT INTO outbox (kind, key, attempt, created_at) VALUES ($1, $2, $3, $4)")
            .bind(kind.as_str())
            .bind(key)
            .bind(attempt)
            .bind(ms(Utc::now())),
    )
    .await?;
    Ok(())
}

/// Outbox entries of attempts: (task run id, attempt).
pub(crate) async fn insert_attempt_outbox<C: Conn>(
    tx: &mut C,
    attempts: &[(String, u32)],
    now: DateTime<Utc>,
) -> Result<()> {
    for chunk in attempts.chunks(CHUNK) {
        tx.execute(Query::values(
            "INSERT INTO outbox (kind, key, attempt, created_at) VALUES ",
            chunk,
            4,
            "",
            |(id, attempt), args| {
                args.push(OutboxKind::Attempt.as_str().into());
                args.push(id.into());
                args.push((*attempt).into());
                args.push(ms(now).into());
            },
        ))
        .await?;
    }
    Ok(())
}

pub(crate) async fn insert_task_runs<C: Conn>(
    tx: &mut C,
    run_id: &str,
    rows: &[NewTaskRunRow<'_>],
    now: DateTime<Utc>,
) -> Result<()> {
    // 17 values a row: keep statements under SQLite's parameter limit.
    for chunk in rows.chunks(CHUNK) {
        tx.execute(Query::values(
            "INSERT INTO task_runs (id, run_id, task_name, status, max_retries, timeout_seconds, concurrency, \
             handler, parallel_index, parallel_count, item, executor, input, error, created_at, ready_at, \
             finished_at) VALUES ",
            chunk,
            17,
            "",
            |r, args| {
                args.push(r.id.as_str().into());
                args.push(run_id.into());
                args.push(r.task.name.as_str().into());
                args.push(r.status.as_str().into());
                args.push(r.task.retries.into());
                args.push(r.task.timeout_seconds.into());
                args.push(r.task.concurrency.into());
                args.push(r.task.handler.clone().into());
                args.push(r.parallel_index.into());
                args.push(r.parallel_count.into());
                args.push(r.item.map(json_text).into());
                args.push(r.task.executor.as_str().into());
                args.push(r.input.clone().into());
                args.push(r.error.clone().into());
                args.push(ms(now).into());
                args.push(r.ready_at.into());
                args.push(r.finished_at.into());
            },
        ))
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_128_random_bits() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        let j = jitter_unit();
        assert!((0.0..1.0).contains(&j));
    }
}
