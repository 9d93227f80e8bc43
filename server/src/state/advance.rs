//! How a run moves forward after a task run finishes, written once for every
//! backend: backends provide the small [`RunTx`] primitives inside their own
//! transaction, and the decisions come from `ork_domain::decide`.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Utc};
use ork_domain::decide::{self, DepSummary, FanOut, Readiness, RunTally};
use ork_domain::template::{self, ResolveContext, TaskOutputs};
use ork_domain::{Parallelism, TaskDefinition, TaskStatus};
use serde_json::Value;

use super::observe::Change;
use super::rows::EndedRun;
use super::{CompiledVersion, Limits, OutboxKind, Result};

/// A pending task run whose input is not resolved yet.
#[derive(Debug, Clone)]
pub(crate) struct UnreadyRow {
    pub id: String,
    pub parallel_index: Option<u32>,
    pub parallel_count: Option<u32>,
    pub item: Option<Value>,
}

/// An instance's output as seen by its downstream tasks.
#[derive(Debug, Clone)]
pub(crate) struct OutputRow {
    pub task_name: String,
    pub parallel_index: Option<u32>,
    pub status: TaskStatus,
    pub output: Option<Value>,
}

/// One instance created by a dynamic fan-out.
#[derive(Debug, Clone)]
pub(crate) struct NewInstance {
    pub index: u32,
    pub item: Option<Value>,
    /// The resolved input, or why it could not be resolved.
    pub input: std::result::Result<Value, String>,
}

/// The primitives a backend implements inside one open transaction.
pub(crate) trait RunTx: Send {
    async fn run_input(&mut self, run_id: &str) -> Result<Value>;
    /// Reads an output that was stored by reference.
    async fn load_output(&mut self, key: &str) -> Result<Value>;
    async fn dep_summaries(&mut self, run_id: &str, deps: &[String]) -> Result<Vec<DepSummary>>;
    async fn unready_rows(&mut self, run_id: &str, task: &str) -> Result<Vec<UnreadyRow>>;
    async fn outputs(&mut self, run_id: &str, tasks: &[String]) -> Result<Vec<OutputRow>>;
    async fn set_ready(&mut self, id: &str, input: &Value, now: DateTime<Utc>) -> Result<()>;
    /// Ends task runs that never started (skipped, failed before dispatch, or
    /// an empty fan-out's success).
    async fn finish_unstarted(
        &mut self,
        id: &str,
        status: TaskStatus,
        output: Option<&Value>,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// Replaces a dynamic fan-out's placeholder with its instances.
    async fn expand(
        &mut self,
        run_id: &str,
        placeholder_id: &str,
        task: &TaskDefinition,
        instances: &[NewInstance],
        now: DateTime<Utc>,
    ) -> Result<()>;
    async fn has_unfinished(&mut self, run_id: &str, task: Option<&str>) -> Result<bool>;
    async fn tally(&mut self, run_id: &str) -> Result<RunTally>;
    /// Ends a run that is still pending or running; `None` when it was not.
    async fn finish_run(
        &mut self,
        run_id: &str,
        status: ork_domain::RunStatus,
        now: DateTime<Utc>,
    ) -> Result<Option<EndedRun>>;
    async fn outbox(&mut self, kind: OutboxKind, key: &str, attempt: Option<u32>) -> Result<()>;
    /// The changes of this transaction, told to the store's observer after
    /// it commits.
    fn changes(&mut self) -> &mut Vec<Change>;
}

/// Evaluates the successors of `finished` tasks (and, transitively, of every
/// task this makes finish), then ends the run when nothing is left.
pub(crate) async fn after_finish<T: RunTx>(
    tx: &mut T,
    version: &CompiledVersion,
    run_id: &str,
    finished: Vec<String>,
    limits: Limits,
    now: DateTime<Utc>,
) -> Result<()> {
    let mut queue: VecDeque<String> = finished.into();
    while let Some(task) = queue.pop_front() {
        if tx.has_unfinished(run_id, Some(&task)).await? {
            continue;
        }
        for successor in version.dag.successors(&task) {
            if evaluate(tx, version, run_id, successor, limits, now).await? {
                queue.push_back(successor.clone());
            }
        }
    }
    finish_run_if_done(tx, run_id, now).await
}

/// Readies (or skips, or fails) every task whose dependencies are all
/// finished: the roots of a new run, or what a retry reset.
pub(crate) async fn evaluate_all<T: RunTx>(
    tx: &mut T,
    version: &CompiledVersion,
    run_id: &str,
    limits: Limits,
    now: DateTime<Utc>,
) -> Result<()> {
    let mut finished = Vec::new();
    for task in version.dag.topo_order() {
        if evaluate(tx, version, run_id, task, limits, now).await? {
            finished.push(task.clone());
        }
    }
    after_finish(tx, version, run_id, finished, limits, now).await
}

/// Ends the run when none of its task runs is unfinished.
pub(crate) async fn finish_run_if_done<T: RunTx>(
    tx: &mut T,
    run_id: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    if tx.has_unfinished(run_id, None).await? {
        return Ok(());
    }
    let tally = tx.tally(run_id).await?;
    if let Some(status) = decide::run_outcome(&tally) {
        if let Some(ended) = tx.finish_run(run_id, status, now).await? {
            let change = ended.change(run_id, status, now);
            tx.changes().push(change);
        }
        tx.outbox(OutboxKind::Run, run_id, None).await?;
    }
    Ok(())
}

/// Looks at one task's unready rows; returns true when some of them finished
/// without running (so its own successors need a look).
async fn evaluate<T: RunTx>(
    tx: &mut T,
    version: &CompiledVersion,
    run_id: &str,
    task_name: &str,
    limits: Limits,
    now: DateTime<Utc>,
) -> Result<bool> {
    let Some(task) = version.task(task_name) else {
        return Ok(false);
    };
    let rows = tx.unready_rows(run_id, task_name).await?;
    if rows.is_empty() {
        return Ok(false);
    }
    let deps = tx
        .dep_summaries(run_id, version.dag.dependencies(task_name))
        .await?;
    match decide::readiness(task, &deps) {
        Readiness::Waiting { .. } => Ok(false),
        Readiness::Skip { reason } => {
            for row in &rows {
                tx.finish_unstarted(&row.id, TaskStatus::Skipped, None, Some(&reason), now)
                    .await?;
            }
            Ok(true)
        }
        Readiness::Ready => {
            let run_input = tx.run_input(run_id).await?;
            let outputs = upstream_outputs(tx, version, run_id, task).await?;
            let mut any_finished = false;
            for row in rows {
                any_finished |=
                    ready_row(tx, run_id, task, &row, &run_input, &outputs, limits, now).await?;
            }
            Ok(any_finished)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn ready_row<T: RunTx>(
    tx: &mut T,
    run_id: &str,
    task: &TaskDefinition,
    row: &UnreadyRow,
    run_input: &Value,
    outputs: &BTreeMap<String, TaskOutputs>,
    limits: Limits,
    now: DateTime<Utc>,
) -> Result<bool> {
    let dynamic = matches!(
        task.parallel,
        Some(Parallelism::CountRef(_) | Parallelism::ForEach(_))
    );
    if dynamic && row.parallel_index.is_none() {
        return expand_placeholder(tx, run_id, task, row, run_input, outputs, limits, now).await;
    }
    let ctx = ResolveContext {
        run_input,
        outputs,
        item: row.item.as_ref(),
        parallel_index: row.parallel_index,
        parallel_count: row.parallel_count,
    };
    match template::resolve_input(&task.input, &ctx) {
        Ok(input) => {
            tx.set_ready(&row.id, &input, now).await?;
            Ok(false)
        }
        Err(e) => {
            let error = format!("task `{}`, field `input`: {e}", task.name);
            tx.finish_unstarted(&row.id, TaskStatus::Failed, None, Some(&error), now)
                .await?;
            Ok(true)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn expand_placeholder<T: RunTx>(
    tx: &mut T,
    run_id: &str,
    task: &TaskDefinition,
    row: &UnreadyRow,
    run_input: &Value,
    outputs: &BTreeMap<String, TaskOutputs>,
    limits: Limits,
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
    let fan = match decide::fan_out(parallel, &source_output, limits.max_fan_out) {
        Ok(fan) => fan,
        Err(e) => {
            let error = format!("task `{}`, field `parallel`: {e}", task.name);
            tx.finish_unstarted(&row.id, TaskStatus::Failed, None, Some(&error), now)
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
        tx.finish_unstarted(&row.id, TaskStatus::Success, Some(&empty), None, now)
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
    tx.expand(run_id, &row.id, task, &instances, now).await?;
    Ok(any_failed)
}

/// Collects the outputs the task's templates and fan-out read, keyed by task.
async fn upstream_outputs<T: RunTx>(
    tx: &mut T,
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
    let mut rows = tx.outputs(run_id, &names).await?;
    // Large outputs live in the object store; templates see their content.
    for row in &mut rows {
        let key = row
            .output
            .as_ref()
            .and_then(super::output_ref)
            .map(str::to_owned);
        if let Some(key) = key {
            row.output = Some(tx.load_output(&key).await?);
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
