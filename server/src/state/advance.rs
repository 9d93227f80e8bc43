//! How a run moves forward after task runs finish: readiness of their
//! successors, fan-out expansion, and the run's outcome. The decisions come
//! from `ork_domain::decide`; this module reads what they need and writes
//! what they decide, inside the caller's transaction, for every backend.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ork_domain::decide::{self, DepSummary, FanOut, Readiness, RunTally};
use ork_domain::template::{self, ResolveContext, TaskOutputs};
use ork_domain::{Parallelism, RunStatus, TaskDefinition, TaskStatus};
use serde_json::Value;

use super::rows::{
    NewTaskRunRow, insert_outbox, insert_task_runs, instance_rows, json_text, ms, opt_json,
    opt_u32, parse_json, run_finished, task_status, to_u32,
};
use super::sql::{CHUNK, Columns, Conn, Query};
use super::{CompiledVersion, Error, Limits, OutboxKind, OutputStore, Result, Transition};

/// What advancing a run needs besides the transaction.
#[derive(Clone)]
pub(crate) struct Env {
    pub limits: Limits,
    /// Where outputs stored by reference are read back from.
    pub outputs: Option<Arc<dyn OutputStore>>,
}

/// A pending task run whose input is not resolved yet.
#[derive(Debug, Clone)]
struct UnreadyRow {
    id: String,
    parallel_index: Option<u32>,
    parallel_count: Option<u32>,
    item: Option<Value>,
}

/// An instance's output as seen by its downstream tasks.
#[derive(Debug, Clone)]
struct OutputRow {
    task_name: String,
    parallel_index: Option<u32>,
    status: TaskStatus,
    output: Option<Value>,
}

/// One instance created by a dynamic fan-out.
#[derive(Debug, Clone)]
pub(crate) struct NewInstance {
    pub index: u32,
    pub item: Option<Value>,
    /// The resolved input, or why it could not be resolved.
    pub input: std::result::Result<Value, String>,
}

/// Evaluates the successors of `finished` tasks (and, transitively, of every
/// task this makes finish), then ends the run when nothing is left; returns
/// the run's end, when it ended.
///
/// A task with unfinished instances (the common case in a fan-out: a report
/// batch ends some of its instances) keeps its run open, so the run-wide
/// look for unfinished task runs is skipped then: it is the costlier query,
/// and it runs under the run's lock.
pub(crate) async fn after_finish<C: Conn>(
    tx: &mut C,
    env: &Env,
    version: &CompiledVersion,
    run_id: &str,
    finished: Vec<String>,
    now: DateTime<Utc>,
) -> Result<Option<Transition>> {
    let mut queue: VecDeque<String> = finished.into();
    let mut open = false;
    while let Some(task) = queue.pop_front() {
        if has_unfinished(tx, run_id, Some(&task)).await? {
            open = true;
            continue;
        }
        for successor in version.dag.successors(&task) {
            if evaluate(tx, env, version, run_id, successor, now).await? {
                queue.push_back(successor.clone());
            }
        }
    }
    if open {
        return Ok(None);
    }
    finish_run_if_done(tx, run_id, now).await
}

/// Readies (or skips, or fails) every task whose dependencies are all
/// finished: the roots of a new run, or what a retry reset. Returns the
/// run's end, when that ended it.
pub(crate) async fn evaluate_all<C: Conn>(
    tx: &mut C,
    env: &Env,
    version: &CompiledVersion,
    run_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<Transition>> {
    let mut finished = Vec::new();
    for task in version.dag.topo_order() {
        if evaluate(tx, env, version, run_id, task, now).await? {
            finished.push(task.clone());
        }
    }
    after_finish(tx, env, version, run_id, finished, now).await
}

/// Ends the run when none of its task runs is unfinished.
async fn finish_run_if_done<C: Conn>(
    tx: &mut C,
    run_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<Transition>> {
    if has_unfinished(tx, run_id, None).await? {
        return Ok(None);
    }
    let tally = tally(tx, run_id).await?;
    let mut ended = None;
    if let Some(status) = decide::run_outcome(&tally) {
        ended = finish_run(tx, run_id, status, now).await?;
        insert_outbox(tx, OutboxKind::Run, run_id, None).await?;
    }
    Ok(ended)
}

/// Looks at one task's unready rows; returns true when some of them finished
/// without running (so its own successors need a look).
async fn evaluate<C: Conn>(
    tx: &mut C,
    env: &Env,
    version: &CompiledVersion,
    run_id: &str,
    task_name: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    let Some(task) = version.task(task_name) else {
        return Ok(false);
    };
    let rows = unready_rows(tx, run_id, task_name).await?;
    if rows.is_empty() {
        return Ok(false);
    }
    let deps = dep_summaries(tx, run_id, version.dag.dependencies(task_name)).await?;
    match decide::readiness(task, &deps) {
        Readiness::Waiting { .. } => Ok(false),
        Readiness::Skip { reason } => {
            let ids: Vec<String> = rows.into_iter().map(|r| r.id).collect();
            finish_unstarted(tx, &ids, TaskStatus::Skipped, None, Some(&reason), now).await?;
            Ok(true)
        }
        Readiness::Ready => {
            let run_input = run_input(tx, run_id).await?;
            let outputs = upstream_outputs(tx, env, version, run_id, task).await?;
            let dynamic = matches!(
                task.parallel,
                Some(Parallelism::CountRef(_) | Parallelism::ForEach(_))
            );
            let mut ready = Vec::with_capacity(rows.len());
            let mut failed = Vec::new();
            let mut any_finished = false;
            for row in rows {
                if dynamic && row.parallel_index.is_none() {
                    any_finished |=
                        expand_placeholder(tx, env, run_id, task, &row, &run_input, &outputs, now)
                            .await?;
                    continue;
                }
                let ctx = ResolveContext {
                    run_input: &run_input,
                    outputs: &outputs,
                    item: row.item.as_ref(),
                    parallel_index: row.parallel_index,
                    parallel_count: row.parallel_count,
                };
                match template::resolve_input(&task.input, &ctx) {
                    Ok(input) => ready.push((row.id, json_text(&input))),
                    Err(e) => {
                        failed.push((row.id, format!("task `{}`, field `input`: {e}", task.name)))
                    }
                }
            }
            set_ready(tx, &ready, now).await?;
            for (id, error) in failed {
                finish_unstarted(tx, &[id], TaskStatus::Failed, None, Some(&error), now).await?;
                any_finished = true;
            }
            Ok(any_finished)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn expand_placeholder<C: Conn>(
    tx: &mut C,
    env: &Env,
    run_id: &str,
    task: &TaskDefinition,
    row: &UnreadyRow,
    run_input: &Value,
    outputs: &BTreeMap<String, TaskOutputs>,
    now: DateTime<Utc>,
) -> Result<bool> {
    let Some(parallel) = &task.parallel else {
        return Ok(false);
    };
    let source = match parallel {
        Parallelism::CountRef(r) | Parallelism::ForEach(r) => outputs.get(&r.task),
        Parallelism::Static(_) => None,
    };
    let source_output = match source {
        Some(TaskOutputs::Single(v)) => v.clone(),
        Some(TaskOutputs::Many(vs)) => Value::Array(vs.clone()),
        None => Value::Null,
    };
    let fan = match decide::fan_out(parallel, &source_output, env.limits.max_fan_out) {
        Ok(fan) => fan,
        Err(e) => {
            let error = format!("task `{}`, field `parallel`: {e}", task.name);
            finish_unstarted(
                tx,
                std::slice::from_ref(&row.id),
                TaskStatus::Failed,
                None,
                Some(&error),
                now,
            )
            .await?;
            return Ok(true);
        }
    };
    let items: Vec<Option<Value>> = match fan {
        FanOut::Count(n) => (0..n).map(|_| None).collect(),
        FanOut::Items(items) => items.into_iter().map(Some).collect(),
    };
    if items.is_empty() {
        let empty = Value::Array(Vec::new());
        finish_unstarted(
            tx,
            std::slice::from_ref(&row.id),
            TaskStatus::Success,
            Some(&empty),
            None,
            now,
        )
        .await?;
        return Ok(true);
    }
    let count = u32::try_from(items.len()).unwrap_or(u32::MAX);
    let instances: Vec<NewInstance> = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            let ctx = ResolveContext {
                run_input,
                outputs,
                item: item.as_ref(),
                parallel_index: Some(index),
                parallel_count: Some(count),
            };
            let input = template::resolve_input(&task.input, &ctx)
                .map_err(|e| format!("task `{}`, field `input`: {e}", task.name));
            NewInstance { index, item, input }
        })
        .collect();
    let any_failed = instances.iter().any(|i| i.input.is_err());
    tx.execute(Query::new("DELETE FROM task_runs WHERE id = $1").bind(&row.id))
        .await?;
    let rows: Vec<NewTaskRunRow<'_>> = instance_rows(task, &instances, now);
    insert_task_runs(tx, run_id, &rows, now).await?;
    Ok(any_failed)
}

/// Collects the outputs the task's templates and fan-out read, keyed by task.
async fn upstream_outputs<C: Conn>(
    tx: &mut C,
    env: &Env,
    version: &CompiledVersion,
    run_id: &str,
    task: &TaskDefinition,
) -> Result<BTreeMap<String, TaskOutputs>> {
    let mut names: Vec<String> = template::task_refs(&task.input)
        .map(|refs| refs.into_iter().collect())
        .unwrap_or_default();
    if let Some(Parallelism::CountRef(r) | Parallelism::ForEach(r)) = &task.parallel {
        names.push(r.task.clone());
    }
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut rows = output_rows(tx, run_id, &names).await?;
    // Large outputs live in the object store; templates see their content.
    for row in &mut rows {
        let key = row
            .output
            .as_ref()
            .and_then(super::output_ref)
            .map(str::to_owned);
        if let Some(key) = key {
            row.output = Some(load_output(env, &key).await?);
        }
    }
    let mut map: BTreeMap<String, TaskOutputs> = BTreeMap::new();
    for name in &names {
        let fanned = version.task(name).is_some_and(|t| t.parallel.is_some());
        let mut instances: Vec<&OutputRow> = rows.iter().filter(|r| &r.task_name == name).collect();
        instances.sort_by_key(|r| r.parallel_index);
        let value_of = |r: &OutputRow| match r.status {
            TaskStatus::Success => r.output.clone().unwrap_or(Value::Null),
            _ => Value::Null,
        };
        let outputs = if fanned {
            TaskOutputs::Many(
                instances
                    .iter()
                    .filter(|r| r.parallel_index.is_some())
                    .map(|r| value_of(r))
                    .collect(),
            )
        } else {
            TaskOutputs::Single(
                instances
                    .first()
                    .map(|r| value_of(r))
                    .unwrap_or(Value::Null),
            )
        };
        map.insert(name.clone(), outputs);
    }
    Ok(map)
}

// ---------- reads and writes ----------

/// Reads an output that was stored by reference.
async fn load_output(env: &Env, key: &str) -> Result<Value> {
    let store = env.outputs.as_ref().ok_or_else(|| {
        Error::Corrupt(format!(
            "output {key} is stored by reference but no object store is configured"
        ))
    })?;
    let bytes = store
        .get(key)
        .await
        .map_err(|e| Error::Corrupt(format!("output {key}: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt(format!("output {key}: {e}")))
}

async fn run_input<C: Conn>(tx: &mut C, run_id: &str) -> Result<Value> {
    let row = tx
        .fetch_optional(Query::new("SELECT input FROM runs WHERE id = $1").bind(run_id))
        .await?
        .ok_or_else(|| Error::Corrupt(format!("run {run_id} vanished while advancing")))?;
    parse_json(&row.text("input")?)
}

async fn dep_summaries<C: Conn>(
    tx: &mut C,
    run_id: &str,
    deps: &[String],
) -> Result<Vec<DepSummary>> {
    if deps.is_empty() {
        return Ok(Vec::new());
    }
    let rows = tx
        .fetch_all(
            Query::new(
                "SELECT task_name, COUNT(*) AS total, \
                 SUM(CASE WHEN status = 'success' THEN 1 ELSE 0 END) AS succeeded, \
                 SUM(CASE WHEN status IN ('failed', 'skipped', 'cancelled') THEN 1 ELSE 0 END) AS unsuccessful \
                 FROM task_runs WHERE run_id = $1 AND task_name = ANY($2) GROUP BY task_name",
            )
            .bind(run_id)
            .bind(deps),
        )
        .await?;
    let mut found: HashMap<String, DepSummary> = HashMap::new();
    for row in rows {
        let task = row.text("task_name")?;
        found.insert(
            task.clone(),
            DepSummary {
                task,
                total: to_u32(row.int("total")?),
                succeeded: to_u32(row.int("succeeded")?),
                unsuccessful: to_u32(row.int("unsuccessful")?),
            },
        );
    }
    Ok(deps
        .iter()
        .map(|d| {
            found.remove(d).unwrap_or(DepSummary {
                task: d.clone(),
                total: 0,
                succeeded: 0,
                unsuccessful: 0,
            })
        })
        .collect())
}

async fn unready_rows<C: Conn>(tx: &mut C, run_id: &str, task: &str) -> Result<Vec<UnreadyRow>> {
    let rows = tx
        .fetch_all(
            Query::new(
                "SELECT id, parallel_index, parallel_count, item FROM task_runs \
                 WHERE run_id = $1 AND task_name = $2 AND status = 'pending' AND ready_at IS NULL \
                 ORDER BY parallel_index",
            )
            .bind(run_id)
            .bind(task),
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(UnreadyRow {
                id: r.text("id")?,
                parallel_index: opt_u32(r.opt_int("parallel_index")?),
                parallel_count: opt_u32(r.opt_int("parallel_count")?),
                item: opt_json(r.opt_text("item")?)?,
            })
        })
        .collect()
}

async fn output_rows<C: Conn>(
    tx: &mut C,
    run_id: &str,
    tasks: &[String],
) -> Result<Vec<OutputRow>> {
    let rows = tx
        .fetch_all(
            Query::new(
                "SELECT task_name, parallel_index, status, output FROM task_runs \
                 WHERE run_id = $1 AND task_name = ANY($2)",
            )
            .bind(run_id)
            .bind(tasks),
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(OutputRow {
                task_name: r.text("task_name")?,
                parallel_index: opt_u32(r.opt_int("parallel_index")?),
                status: task_status(&r.text("status")?)?,
                output: opt_json(r.opt_text("output")?)?,
            })
        })
        .collect()
}

/// Gives pending task runs their resolved inputs: they are ready.
async fn set_ready<C: Conn>(
    tx: &mut C,
    rows: &[(String, String)],
    now: DateTime<Utc>,
) -> Result<()> {
    for chunk in rows.chunks(CHUNK) {
        let q = Query::values(
            "UPDATE task_runs SET input = v.column2, ready_at = v.column3 FROM (VALUES ",
            chunk,
            3,
            ") AS v WHERE task_runs.id = v.column1",
            |(id, input), args| {
                args.push(id.into());
                args.push(input.into());
                args.push(ms(now).into());
            },
        );
        tx.execute(q).await?;
    }
    Ok(())
}

/// Ends task runs that never started (skipped, failed before dispatch, or
/// an empty fan-out's success).
pub(crate) async fn finish_unstarted<C: Conn>(
    tx: &mut C,
    ids: &[String],
    status: TaskStatus,
    output: Option<&Value>,
    error: Option<&str>,
    now: DateTime<Utc>,
) -> Result<()> {
    for chunk in ids.chunks(CHUNK) {
        tx.execute(
            Query::new(
                "UPDATE task_runs SET status = $1, output = $2, error = $3, finished_at = $4, \
                 parallel_count = CASE WHEN $1 = 'success' AND parallel_index IS NULL AND $2 = '[]' \
                 THEN 0 ELSE parallel_count END WHERE id = ANY($5)",
            )
            .bind(status.as_str())
            .bind(output.map(json_text))
            .bind(error)
            .bind(ms(now))
            .bind(chunk),
        )
        .await?;
    }
    Ok(())
}

pub(crate) async fn has_unfinished<C: Conn>(
    tx: &mut C,
    run_id: &str,
    task: Option<&str>,
) -> Result<bool> {
    let found = match task {
        Some(task) => {
            tx.fetch_optional(
                Query::new(
                    "SELECT 1 AS one FROM task_runs WHERE run_id = $1 AND task_name = $2 \
                     AND status IN ('pending', 'dispatched', 'running') LIMIT 1",
                )
                .bind(run_id)
                .bind(task),
            )
            .await?
        }
        None => {
            tx.fetch_optional(
                Query::new(
                    "SELECT 1 AS one FROM task_runs WHERE run_id = $1 \
                     AND status IN ('pending', 'dispatched', 'running') LIMIT 1",
                )
                .bind(run_id),
            )
            .await?
        }
    };
    Ok(found.is_some())
}

async fn tally<C: Conn>(tx: &mut C, run_id: &str) -> Result<RunTally> {
    let rows = tx
        .fetch_all(
            Query::new(
                "SELECT status, COUNT(*) AS n FROM task_runs WHERE run_id = $1 GROUP BY status",
            )
            .bind(run_id),
        )
        .await?;
    let mut tally = RunTally::default();
    for row in rows {
        let n = to_u32(row.int("n")?);
        tally.total += n;
        match task_status(&row.text("status")?)? {
            TaskStatus::Success => tally.success += n,
            TaskStatus::Failed => tally.failed += n,
            TaskStatus::Skipped => tally.skipped += n,
            TaskStatus::Cancelled => tally.cancelled += n,
            _ => tally.unfinished += n,
        }
    }
    Ok(tally)
}

/// Ends a run that is still pending or running; `None` when it was not.
async fn finish_run<C: Conn>(
    tx: &mut C,
    run_id: &str,
    status: RunStatus,
    now: DateTime<Utc>,
) -> Result<Option<Transition>> {
    let ended = tx
        .fetch_optional(
            Query::new(
                "UPDATE runs SET status = $1, finished_at = $2 WHERE id = $3 AND status IN ('pending', 'running') \
                 RETURNING workflow, created_at, started_at",
            )
            .bind(status.as_str())
            .bind(ms(now))
            .bind(run_id),
        )
        .await?;
    ended
        .map(|r| run_finished(&r, run_id, status, now))
        .transpose()
}
