//! Runs and task runs as people see them (`ork.v1.Run`, `ork.v1.TaskRun`),
//! built from state records: what `GetRun` and `WatchRun` return and what the
//! mirror writes as `run.json`, with the reason each pending task waits.
//! Pure functions, shared by the API and the mirror (which never reaches
//! into the API).

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use ork_domain::TaskStatus;
use ork_proto::json::to_proto;
use ork_proto::time::to_proto as timestamp;
use ork_proto::v1;

pub use crate::executor::pool::HandlerSlots;
use crate::state::{AttemptRecord, CompiledVersion, RunRecord, TaskRunRecord};

fn opt_timestamp(t: Option<DateTime<Utc>>) -> Option<pbjson_types::Timestamp> {
    t.map(timestamp)
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
        labels: record
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// What the dispatching side of this server looks like right now: what
/// decides why a ready task is still pending.
#[derive(Debug, Clone, Default)]
pub struct DispatchView {
    /// Per handler of the attached pool workers: how many workers serve it
    /// and how many of their slots are free.
    pub handlers: BTreeMap<String, HandlerSlots>,
    /// Free slots for launched (subprocess) tasks.
    pub launched_free: u32,
    /// False when another replica holds the run's lease: its pool, not this
    /// one's, decides.
    pub owns_run: bool,
    /// The owner of the run's lease, for the message when it is not us.
    pub owner: String,
    /// `--schedule-to-start-timeout`: when a task nobody serves is failed.
    pub schedule_to_start_timeout: Option<std::time::Duration>,
}

/// Everything [`pending_reason`] reads besides the task run itself.
#[derive(Clone, Copy)]
pub struct ReasonContext<'a> {
    pub version: Option<&'a CompiledVersion>,
    pub now: DateTime<Utc>,
    /// True while the run itself waits for its workflow's `concurrency`.
    pub run_waiting: bool,
    /// The live dispatch state; `None` where it is unknown (the mirror).
    pub dispatch: Option<&'a DispatchView>,
}

/// Task runs in the order the workflow lists its tasks, instances by index,
/// each pending one with the reason it is still pending.
pub fn task_runs(
    records: &[TaskRunRecord],
    attempts: &[AttemptRecord],
    context: &ReasonContext<'_>,
) -> Vec<v1::TaskRun> {
    let version = context.version;
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
            let mut t = task_run(r, pending_reason(r, &counts, context));
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
    ctx: &ReasonContext<'_>,
) -> String {
    if r.status != TaskStatus::Pending {
        return String::new();
    }
    let version = ctx.version;
    if ctx.run_waiting {
        let cap = version
            .and_then(|v| v.definition.concurrency)
            .map(|n| format!(" (it allows {n} at once)"))
            .unwrap_or_default();
        return format!("the run waits for other runs of its workflow to end{cap}");
    }
    match r.ready_at {
        Some(at) if at > ctx.now => format!(
            "retry delay: attempt {} starts at {}",
            r.attempt + 1,
            at.format("%H:%M:%S%.3f UTC")
        ),
        Some(ready_at) => {
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
                _ => match ctx.dispatch {
                    Some(view) => dispatch_reason(r, ready_at, view, version),
                    None => "queued: waiting for dispatch".to_owned(),
                },
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

/// Why a ready task has not been handed to a worker: what its executor lacks.
fn dispatch_reason(
    r: &TaskRunRecord,
    ready_at: DateTime<Utc>,
    view: &DispatchView,
    version: Option<&CompiledVersion>,
) -> String {
    if r.executor != ork_domain::WORKERS_EXECUTOR {
        return if view.launched_free == 0 {
            "waiting for a subprocess slot: this server runs at most --max-subprocesses at once, and all are busy".to_owned()
        } else {
            "queued: waiting for dispatch".to_owned()
        };
    }
    let handler = version
        .and_then(|v| v.task(&r.task_name))
        .and_then(|t| t.handler.as_deref())
        .unwrap_or_default();
    if !view.owns_run {
        return format!(
            "waiting for a pool worker serving handler `{handler}` on `{}`, the replica that runs it",
            view.owner
        );
    }
    match view.handlers.get(handler) {
        None => {
            let attached = if view.handlers.is_empty() {
                "no pool worker is attached".to_owned()
            } else {
                let names: Vec<&str> = view.handlers.keys().map(String::as_str).collect();
                format!("attached: {}", names.join(", "))
            };
            let deadline = view
                .schedule_to_start_timeout
                .and_then(|t| chrono::Duration::from_std(t).ok())
                .map(|t| {
                    format!(
                        "; fails at {} (--schedule-to-start-timeout)",
                        (ready_at + t).format("%H:%M:%S UTC")
                    )
                })
                .unwrap_or_default();
            format!("no attached worker serves handler `{handler}` ({attached}){deadline}")
        }
        Some(slots) if slots.free == 0 => format!(
            "waiting for a free slot: {} pool {} serving `{handler}`, all slots busy",
            slots.workers,
            if slots.workers == 1 {
                "worker"
            } else {
                "workers"
            }
        ),
        Some(_) => "queued: waiting for dispatch".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ork_domain::parse::{ParseOptions, parse_workflow};

    fn version(yaml: &str) -> CompiledVersion {
        let definition = parse_workflow(yaml, &ParseOptions::default()).expect("valid");
        CompiledVersion {
            version: "v".into(),
            yaml: yaml.into(),
            dag: ork_domain::dag::Dag::new(&definition).expect("dag"),
            definition,
            created_at: Utc::now(),
        }
    }

    fn pending(name: &str, executor: &str, ready: Option<DateTime<Utc>>) -> TaskRunRecord {
        TaskRunRecord {
            id: format!("tr-{name}"),
            run_id: "r".into(),
            task_name: name.into(),
            status: TaskStatus::Pending,
            attempt: 0,
            max_retries: 0,
            parallel_index: None,
            parallel_count: None,
            executor: executor.into(),
            input: None,
            output: None,
            error: None,
            created_at: Utc::now(),
            ready_at: ready,
            dispatched_at: None,
            started_at: None,
            finished_at: None,
        }
    }

    const YAML: &str = "name: w\ntasks:\n  - name: a\n    command: [\"true\"]\n  - name: b\n    executor: workers\n    handler: build_report\n  - name: c\n    command: [\"true\"]\n    depends_on: [a]\n";

    fn reason(
        task: &TaskRunRecord,
        all: &[TaskRunRecord],
        view: &DispatchView,
        run_waiting: bool,
    ) -> String {
        let v = version(YAML);
        let counts = RunCounts::new(all);
        let ctx = ReasonContext {
            version: Some(&v),
            now: DateTime::from_timestamp(1_800_000_010, 0).expect("now"),
            run_waiting,
            dispatch: Some(view),
        };
        pending_reason(task, &counts, &ctx)
    }

    #[test]
    fn a_pending_task_says_what_it_waits_for() {
        let ready = DateTime::from_timestamp(1_800_000_000, 0);
        let a = pending("a", "subprocess", ready);
        let b = pending("b", "workers", ready);
        let c = pending("c", "subprocess", None);
        let all = vec![a.clone(), b.clone(), c.clone()];
        let idle = DispatchView {
            launched_free: 4,
            owns_run: true,
            owner: "local".into(),
            ..DispatchView::default()
        };
        assert_eq!(reason(&c, &all, &idle, false), "waiting on a");
        assert_eq!(
            reason(&a, &all, &idle, false),
            "queued: waiting for dispatch"
        );
        assert_eq!(
            reason(&b, &all, &idle, false),
            "no attached worker serves handler `build_report` (no pool worker is attached)"
        );
        let mut others = idle.clone();
        others.handlers.insert(
            "count_words".into(),
            HandlerSlots {
                workers: 1,
                free: 2,
            },
        );
        others.handlers.insert(
            "total".into(),
            HandlerSlots {
                workers: 1,
                free: 2,
            },
        );
        others.schedule_to_start_timeout = Some(std::time::Duration::from_secs(30));
        assert_eq!(
            reason(&b, &all, &others, false),
            "no attached worker serves handler `build_report` (attached: count_words, total); fails at 08:00:30 UTC (--schedule-to-start-timeout)"
        );
        let mut busy = idle.clone();
        busy.launched_free = 0;
        busy.handlers.insert(
            "build_report".into(),
            HandlerSlots {
                workers: 2,
                free: 0,
            },
        );
        assert_eq!(
            reason(&a, &all, &busy, false),
            "waiting for a subprocess slot: this server runs at most --max-subprocesses at once, and all are busy"
        );
        assert_eq!(
            reason(&b, &all, &busy, false),
            "waiting for a free slot: 2 pool workers serving `build_report`, all slots busy"
        );
        let elsewhere = DispatchView {
            owns_run: false,
            owner: "sched-2".into(),
            ..idle.clone()
        };
        assert_eq!(
            reason(&b, &all, &elsewhere, false),
            "waiting for a pool worker serving handler `build_report` on `sched-2`, the replica that runs it"
        );
        assert_eq!(
            reason(&a, &all, &idle, true),
            "the run waits for other runs of its workflow to end"
        );
        let later = pending(
            "a",
            "subprocess",
            DateTime::from_timestamp(1_800_000_020, 0),
        );
        assert_eq!(
            reason(&later, &all, &idle, false),
            "retry delay: attempt 1 starts at 08:00:20.000 UTC"
        );
    }
}
