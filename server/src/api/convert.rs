//! Conversions from state records to proto messages. Pure functions.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use ork_domain::{Parallelism, TaskStatus};
use ork_proto::json::to_proto;
use ork_proto::v1;

use crate::state::{
    AttemptRecord, CompiledVersion, LogRecord, RunRecord, TaskRunRecord, WorkflowRecord,
};

pub use ork_proto::time::to_proto as timestamp;

fn opt_timestamp(t: Option<DateTime<Utc>>) -> Option<pbjson_types::Timestamp> {
    t.map(timestamp)
}

pub fn workflow(record: &WorkflowRecord) -> v1::Workflow {
    let version = &record.version;
    v1::Workflow {
        name: record.name.clone(),
        version: version.version.clone(),
        schedule: version.definition.schedule.clone().unwrap_or_default(),
        tasks: version
            .definition
            .tasks
            .iter()
            .map(|t| v1::WorkflowTask {
                name: t.name.clone(),
                executor: t.executor.clone(),
                depends_on: t.depends_on.clone(),
                parallel: match &t.parallel {
                    None => String::new(),
                    Some(Parallelism::Static(n)) => n.to_string(),
                    Some(Parallelism::CountRef(r)) => {
                        format!("count: {}.{}", r.task, r.path.join("."))
                    }
                    Some(Parallelism::ForEach(r)) => {
                        format!("for_each: {}.{}", r.task, r.path.join("."))
                    }
                },
                file: t.file.clone().unwrap_or_default(),
                retries: t.retries,
                timeout_seconds: t.timeout_seconds,
            })
            .collect(),
        created_at: Some(timestamp(record.created_at)),
        updated_at: Some(timestamp(record.updated_at)),
        definition_yaml: version.yaml.clone(),
    }
}

pub fn run(record: &RunRecord, tasks: Vec<v1::TaskRun>) -> v1::Run {
    v1::Run {
        id: record.id.clone(),
        workflow: record.workflow.clone(),
        workflow_version: record.workflow_version.clone(),
        status: record.status.as_str().to_owned(),
        triggered_by: record.triggered_by.as_str().to_owned(),
        input: Some(to_proto(&record.input)),
        created_at: Some(timestamp(record.created_at)),
        started_at: opt_timestamp(record.started_at),
        finished_at: opt_timestamp(record.finished_at),
        tasks,
        owner: record.owner.clone().unwrap_or_default(),
    }
}

/// Task runs in the order the workflow lists its tasks, instances by index,
/// each pending one with the reason it is still pending.
pub fn task_runs(
    records: &[TaskRunRecord],
    attempts: &[AttemptRecord],
    version: Option<&CompiledVersion>,
    now: DateTime<Utc>,
) -> Vec<v1::TaskRun> {
    let position = |name: &str| {
        version
            .and_then(|v| v.definition.tasks.iter().position(|t| t.name == name))
            .unwrap_or(usize::MAX)
    };
    let mut sorted: Vec<&TaskRunRecord> = records.iter().collect();
    sorted.sort_by_key(|r| {
        (
            position(&r.task_name),
            r.task_name.clone(),
            r.parallel_index,
        )
    });
    // Grouped once: a fan-out of 10,000 would otherwise scan every attempt
    // (and every sibling) for each of its task runs.
    let counts = RunCounts::new(records);
    let mut by_task_run: HashMap<&str, Vec<&AttemptRecord>> = HashMap::new();
    for a in attempts {
        by_task_run
            .entry(a.task_run_id.as_str())
            .or_default()
            .push(a);
    }
    sorted
        .into_iter()
        .map(|r| {
            let mut t = task_run(r, pending_reason(r, &counts, version, now));
            t.attempts = by_task_run
                .get(r.id.as_str())
                .map(|a| a.iter().map(|a| attempt(a)).collect())
                .unwrap_or_default();
            t
        })
        .collect()
}

/// What [`pending_reason`] needs to know about a run's other task runs,
/// counted once per listing so that it stays linear in the run's size.
pub struct RunCounts<'a> {
    /// Dispatched or running task runs per task.
    active: HashMap<&'a str, usize>,
    /// Tasks with at least one task run not finished yet.
    unfinished: HashSet<&'a str>,
}

impl<'a> RunCounts<'a> {
    pub fn new(all: &'a [TaskRunRecord]) -> Self {
        let mut active = HashMap::new();
        let mut unfinished = HashSet::new();
        for t in all {
            if t.status.is_active() {
                *active.entry(t.task_name.as_str()).or_default() += 1;
            }
            if !t.status.is_terminal() {
                unfinished.insert(t.task_name.as_str());
            }
        }
        Self { active, unfinished }
    }
}

pub fn attempt(a: &AttemptRecord) -> v1::Attempt {
    v1::Attempt {
        attempt: a.attempt,
        status: a.status.as_str().to_owned(),
        error: a.error.clone().unwrap_or_default(),
        dispatched_at: Some(timestamp(a.dispatched_at)),
        started_at: opt_timestamp(a.started_at),
        finished_at: opt_timestamp(a.finished_at),
        metrics: a
            .metrics
            .iter()
            .map(|m| (m.name.clone(), m.value))
            .collect(),
    }
}

pub fn task_run(r: &TaskRunRecord, pending_reason: String) -> v1::TaskRun {
    v1::TaskRun {
        id: r.id.clone(),
        run_id: r.run_id.clone(),
        name: r.task_name.clone(),
        status: r.status.as_str().to_owned(),
        attempt: r.attempt,
        max_retries: r.max_retries,
        parallel_index: r.parallel_index,
        parallel_count: r.parallel_count,
        executor: r.executor.clone(),
        input: r.input.as_ref().map(to_proto),
        output: r.output.as_ref().map(to_proto),
        error: r.error.clone().unwrap_or_default(),
        pending_reason,
        created_at: Some(timestamp(r.created_at)),
        ready_at: opt_timestamp(r.ready_at),
        dispatched_at: opt_timestamp(r.dispatched_at),
        started_at: opt_timestamp(r.started_at),
        finished_at: opt_timestamp(r.finished_at),
        attempts: Vec::new(),
    }
}

/// Why a pending task run is not running yet; empty for other statuses.
pub fn pending_reason(
    r: &TaskRunRecord,
    counts: &RunCounts<'_>,
    version: Option<&CompiledVersion>,
    now: DateTime<Utc>,
) -> String {
    if r.status != TaskStatus::Pending {
        return String::new();
    }
    match r.ready_at {
        Some(at) if at > now => format!(
            "retry delay: attempt {} starts at {}",
            r.attempt + 1,
            at.format("%H:%M:%S%.3f UTC")
        ),
        Some(_) => {
            let cap = version
                .and_then(|v| v.task(&r.task_name))
                .and_then(|t| t.concurrency);
            let active = counts
                .active
                .get(r.task_name.as_str())
                .copied()
                .unwrap_or(0);
            match cap {
                Some(cap) if active >= cap as usize => format!(
                    "concurrency cap: {active} of {cap} instances of `{}` running",
                    r.task_name
                ),
                _ => "queued: waiting for dispatch".to_owned(),
            }
        }
        None => {
            let deps = version
                .map(|v| v.dag.dependencies(&r.task_name).to_vec())
                .unwrap_or_default();
            let waiting: Vec<String> = deps
                .into_iter()
                .filter(|d| counts.unfinished.contains(d.as_str()))
                .collect();
            if waiting.is_empty() {
                "waiting on upstream tasks".to_owned()
            } else {
                format!("waiting on {}", waiting.join(", "))
            }
        }
    }
}

pub fn log_line(l: &LogRecord) -> v1::LogLine {
    v1::LogLine {
        task: l.task_name.clone(),
        parallel_index: l.parallel_index,
        attempt: l.attempt,
        stream: l.stream.clone(),
        line: l.line.clone(),
        time: Some(timestamp(l.time)),
    }
}
