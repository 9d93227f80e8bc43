//! Prometheus metrics: the registry behind `/metrics`.
//!
//! Counters and histograms of transitions are fed by the committed notifier
//! ([`Observer`]): the state store's `transitions` module gathers what each
//! transaction did and the notifier tells it after the commit, so each
//! transition is counted once, whichever API call, report batch or loop
//! caused it. Gauges (queue
//! depth, pool, mirror backlog, leases) are read when `/metrics` is scraped.
//! Labels are bounded: workflow and task names come from deployed
//! definitions, outcomes and statuses are fixed sets, and the series of
//! task-recorded metrics are capped ([`MAX_TASK_METRIC_SERIES`]); no run or
//! task run id is ever a label.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::executor::PoolStats;
use crate::notify::Observer;
use crate::state::{FinishedAttempt, QueueStats, Transition};

/// Most distinct (workflow, task, metric name) series of task-recorded
/// metrics one server exports; further names are dropped (and counted in
/// `ork_task_metric_series_dropped_total`) so a task cannot blow up the
/// scrape.
pub const MAX_TASK_METRIC_SERIES: usize = 1000;

/// Bucket bounds of the duration histograms, in seconds: milliseconds (task
/// hand-offs) to an hour (long tasks and runs).
const DURATION_BUCKETS: [f64; 17] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    1800.0, 3600.0,
];

/// Bucket bounds of state transactions: most take well under a millisecond.
const TRANSACTION_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// Bucket bounds of task-recorded values, whose scale nobody knows in
/// advance: powers of ten from 0.001 to 10^9.
fn task_metric_buckets() -> impl Iterator<Item = f64> {
    (-3..=9).map(|e| 10f64.powi(e))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkflowLabels {
    workflow: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    workflow: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    workflow: String,
    task: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    workflow: String,
    task: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskMetricLabels {
    workflow: String,
    task: String,
    name: String,
}

/// The label of a state-store operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The latency histogram of state-store write transactions.
type OperationHistogram = HistogramFamily<OperationLabels>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

fn transaction_histogram() -> Histogram {
    Histogram::new(TRANSACTION_BUCKETS)
}

fn task_metric_histogram() -> Histogram {
    Histogram::new(task_metric_buckets())
}

/// Every metric of one server process. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    runs_started: Family<WorkflowLabels, Counter>,
    runs_finished: Family<RunLabels, Counter>,
    run_duration: HistogramFamily<RunLabels>,
    attempts: Family<AttemptLabels, Counter>,
    task_duration: HistogramFamily<AttemptLabels>,
    schedule_to_start: HistogramFamily<TaskLabels>,
    task_metrics: HistogramFamily<TaskMetricLabels>,
    /// The series `task_metrics` holds, to enforce the cap.
    task_metric_series: Mutex<HashSet<TaskMetricLabels>>,
    task_metric_series_dropped: Counter,
    cron_fires: Family<WorkflowLabels, Counter>,
    transactions: OperationHistogram,
    queue_depth: Family<ReasonLabels, Gauge>,
    task_runs_active: Family<StatusLabels, Gauge>,
    runs_active: Family<StatusLabels, Gauge>,
    pool_workers: Gauge,
    pool_slots: Gauge,
    pool_slots_busy: Gauge,
    mirror_backlog: Gauge,
    leased_runs: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics { .. }")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let runs_started = Family::<WorkflowLabels, Counter>::default();
        registry.register(
            "ork_runs_started",
            "Runs that began running (created, promoted from pending, or re-opened by a retry)",
            runs_started.clone(),
        );
        let runs_finished = Family::<RunLabels, Counter>::default();
        registry.register(
            "ork_runs_finished",
            "Runs that ended, by final status",
            runs_finished.clone(),
        );
        let run_duration: HistogramFamily<RunLabels> =
            Family::new_with_constructor(duration_histogram);
        registry.register(
            "ork_run_duration_seconds",
            "Time from a run's start to its end",
            run_duration.clone(),
        );
        let attempts = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "ork_task_attempts",
            "Task attempts that ended, by outcome (success, failed, timeout, lost, cancelled)",
            attempts.clone(),
        );
        let task_duration: HistogramFamily<AttemptLabels> =
            Family::new_with_constructor(duration_histogram);
        registry.register(
            "ork_task_duration_seconds",
            "Time from an attempt's start (or dispatch, if it never started) to its end",
            task_duration.clone(),
        );
        let schedule_to_start: HistogramFamily<TaskLabels> =
            Family::new_with_constructor(duration_histogram);
        registry.register(
            "ork_task_schedule_to_start_seconds",
            "Time from a task run becoming ready to a worker starting it",
            schedule_to_start.clone(),
        );
        let task_metrics: HistogramFamily<TaskMetricLabels> =
            Family::new_with_constructor(task_metric_histogram);
        registry.register(
            "ork_task_metric",
            "Values tasks recorded for their attempts (ctx.metrics.record, ORK_METRICS), by name",
            task_metrics.clone(),
        );
        let task_metric_series_dropped = Counter::default();
        registry.register(
            "ork_task_metric_series_dropped",
            "Task-recorded values not exported because the cap on distinct series was reached",
            task_metric_series_dropped.clone(),
        );
        let cron_fires = Family::<WorkflowLabels, Counter>::default();
        registry.register(
            "ork_cron_fires",
            "Schedule fires that created a run on this replica",
            cron_fires.clone(),
        );
        let transactions: OperationHistogram = Family::new_with_constructor(transaction_histogram);
        registry.register(
            "ork_state_transaction_duration_seconds",
            "Latency of state-store write transactions (retries included), by operation",
            transactions.clone(),
        );
        let queue_depth = Family::<ReasonLabels, Gauge>::default();
        registry.register(
            "ork_queue_depth",
            "Pending task runs, by why they wait (upstream, retry_delay, ready)",
            queue_depth.clone(),
        );
        let task_runs_active = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "ork_task_runs_active",
            "Task runs out with workers, by status (dispatched, running)",
            task_runs_active.clone(),
        );
        let runs_active = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "ork_runs_active",
            "Unfinished runs, by status (pending on workflow concurrency, running)",
            runs_active.clone(),
        );
        let pool_workers = Gauge::default();
        registry.register(
            "ork_pool_workers",
            "Pool workers attached to this replica",
            pool_workers.clone(),
        );
        let pool_slots = Gauge::default();
        registry.register(
            "ork_pool_slots",
            "Slots of the pool workers attached to this replica",
            pool_slots.clone(),
        );
        let pool_slots_busy = Gauge::default();
        registry.register(
            "ork_pool_slots_busy",
            "Pool slots running an attempt on this replica",
            pool_slots_busy.clone(),
        );
        let mirror_backlog = Gauge::default();
        registry.register(
            "ork_mirror_backlog",
            "Committed changes not yet mirrored to the object store (outbox entries)",
            mirror_backlog.clone(),
        );
        let leased_runs = Gauge::default();
        registry.register(
            "ork_leased_runs",
            "Unfinished runs whose lease this replica holds",
            leased_runs.clone(),
        );
        registry.register(
            "ork_build",
            "The ork version serving",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                runs_started,
                runs_finished,
                run_duration,
                attempts,
                task_duration,
                schedule_to_start,
                task_metrics,
                task_metric_series: Mutex::default(),
                task_metric_series_dropped,
                cron_fires,
                transactions,
                queue_depth,
                task_runs_active,
                runs_active,
                pool_workers,
                pool_slots,
                pool_slots_busy,
                mirror_backlog,
                leased_runs,
            }),
        }
    }

    /// Sets the gauges read at scrape time.
    pub fn set_gauges(&self, queue: &QueueStats, pool: PoolStats) {
        let i = &self.inner;
        let set = |family: &Family<ReasonLabels, Gauge>, reason, v: u64| {
            family
                .get_or_create(&ReasonLabels { reason })
                .set(saturating_i64(v));
        };
        set(&i.queue_depth, "upstream", queue.waiting_upstream);
        set(&i.queue_depth, "retry_delay", queue.retry_delay);
        set(&i.queue_depth, "ready", queue.ready);
        let status = |family: &Family<StatusLabels, Gauge>, status, v: u64| {
            family
                .get_or_create(&StatusLabels { status })
                .set(saturating_i64(v));
        };
        status(&i.task_runs_active, "dispatched", queue.dispatched);
        status(&i.task_runs_active, "running", queue.running);
        status(&i.runs_active, "pending", queue.runs_pending);
        status(&i.runs_active, "running", queue.runs_running);
        i.mirror_backlog.set(saturating_i64(queue.outbox));
        i.leased_runs.set(saturating_i64(queue.leased_runs));
        i.pool_workers.set(saturating_i64(pool.workers));
        i.pool_slots.set(saturating_i64(pool.slots));
        i.pool_slots_busy.set(saturating_i64(pool.busy));
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut text, &self.inner.registry);
        text
    }

    /// The `Content-Type` of [`Metrics::encode`]'s output.
    pub const CONTENT_TYPE: &'static str = prometheus_text::CONTENT_TYPE;

    fn attempt_finished(&self, a: &FinishedAttempt) {
        let i = &self.inner;
        let labels = AttemptLabels {
            workflow: a.workflow.clone(),
            task: a.task.clone(),
            outcome: a.outcome.as_str().to_owned(),
        };
        i.attempts.get_or_create(&labels).inc();
        let from = a.started_at.unwrap_or(a.dispatched_at);
        i.task_duration
            .get_or_create(&labels)
            .observe(seconds(a.finished_at - from));
        for m in &a.metrics {
            let labels = TaskMetricLabels {
                workflow: a.workflow.clone(),
                task: a.task.clone(),
                name: m.name.clone(),
            };
            {
                let mut series = i
                    .task_metric_series
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if !series.contains(&labels) {
                    if series.len() >= MAX_TASK_METRIC_SERIES {
                        i.task_metric_series_dropped.inc();
                        continue;
                    }
                    series.insert(labels.clone());
                }
            }
            i.task_metrics.get_or_create(&labels).observe(m.value);
        }
    }
}

impl Observer for Metrics {
    fn committed(&self, transitions: &[Transition]) {
        let i = &self.inner;
        for transition in transitions {
            match transition {
                Transition::RunStarted { workflow, .. } => {
                    i.runs_started
                        .get_or_create(&WorkflowLabels {
                            workflow: workflow.clone(),
                        })
                        .inc();
                }
                Transition::RunFinished {
                    workflow,
                    status,
                    created_at,
                    started_at,
                    finished_at,
                    ..
                } => {
                    let labels = RunLabels {
                        workflow: workflow.clone(),
                        status: status.as_str().to_owned(),
                    };
                    i.runs_finished.get_or_create(&labels).inc();
                    let from = started_at.unwrap_or(*created_at);
                    i.run_duration
                        .get_or_create(&labels)
                        .observe(seconds(*finished_at - from));
                }
                Transition::AttemptStarted {
                    workflow,
                    task,
                    ready_at,
                    started_at,
                } => {
                    if let Some(ready_at) = ready_at {
                        i.schedule_to_start
                            .get_or_create(&TaskLabels {
                                workflow: workflow.clone(),
                                task: task.clone(),
                            })
                            .observe(seconds(*started_at - *ready_at));
                    }
                }
                Transition::AttemptFinished(a) => self.attempt_finished(a),
                Transition::ScheduleFired { workflow } => {
                    i.cron_fires
                        .get_or_create(&WorkflowLabels {
                            workflow: workflow.clone(),
                        })
                        .inc();
                }
            }
        }
    }

    fn transaction(&self, operation: &'static str, seconds: f64) {
        self.inner
            .transactions
            .get_or_create(&OperationLabels { operation })
            .observe(seconds);
    }
}

/// A non-negative duration in seconds (clocks of replicas may disagree a little).
fn seconds(d: chrono::TimeDelta) -> f64 {
    (d.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6).max(0.0)
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{AttemptOutcome, TaskMetric};
    use chrono::{DateTime, Utc};
    use ork_domain::RunStatus;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap_or_default()
    }

    fn attempt(outcome: AttemptOutcome, metrics: Vec<TaskMetric>) -> Transition {
        Transition::AttemptFinished(Box::new(FinishedAttempt {
            run_id: "r".into(),
            workflow: "etl".into(),
            task: "load".into(),
            task_run_id: "t".into(),
            attempt: 1,
            parallel_index: None,
            outcome,
            error: None,
            dispatched_at: at(0),
            started_at: Some(at(100)),
            finished_at: at(1600),
            metrics,
        }))
    }

    #[test]
    fn transitions_become_counters_and_histograms() {
        let m = Metrics::new();
        m.committed(&[
            Transition::RunStarted {
                run_id: "r".into(),
                workflow: "etl".into(),
            },
            Transition::AttemptStarted {
                workflow: "etl".into(),
                task: "load".into(),
                ready_at: Some(at(0)),
                started_at: at(100),
            },
            attempt(
                AttemptOutcome::Success,
                vec![TaskMetric {
                    name: "rows".into(),
                    value: 1200.0,
                }],
            ),
            attempt(AttemptOutcome::Lost, Vec::new()),
            Transition::RunFinished {
                run_id: "r".into(),
                workflow: "etl".into(),
                status: RunStatus::Success,
                created_at: at(0),
                started_at: Some(at(0)),
                finished_at: at(2000),
            },
        ]);
        let text = m.encode();
        for line in [
            "ork_runs_started_total{workflow=\"etl\"} 1",
            "ork_runs_finished_total{workflow=\"etl\",status=\"success\"} 1",
            "ork_run_duration_seconds_sum{workflow=\"etl\",status=\"success\"} 2.0",
            "ork_task_attempts_total{workflow=\"etl\",task=\"load\",outcome=\"success\"} 1",
            "ork_task_attempts_total{workflow=\"etl\",task=\"load\",outcome=\"lost\"} 1",
            "ork_task_duration_seconds_sum{workflow=\"etl\",task=\"load\",outcome=\"success\"} 1.5",
            "ork_task_schedule_to_start_seconds_count{workflow=\"etl\",task=\"load\"} 1",
            "ork_task_metric_sum{workflow=\"etl\",task=\"load\",name=\"rows\"} 1200.0",
            "ork_task_metric_count{workflow=\"etl\",task=\"load\",name=\"rows\"} 1",
            "ork_build_info{version=",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }

    #[test]
    fn task_metric_series_are_capped() {
        let m = Metrics::new();
        let metrics: Vec<TaskMetric> = (0..MAX_TASK_METRIC_SERIES + 5)
            .map(|n| TaskMetric {
                name: format!("m{n}"),
                value: 1.0,
            })
            .collect();
        m.committed(&[attempt(AttemptOutcome::Success, metrics)]);
        assert_eq!(
            m.inner.task_metric_series.lock().map(|s| s.len()).ok(),
            Some(MAX_TASK_METRIC_SERIES)
        );
        assert!(
            m.encode()
                .contains("ork_task_metric_series_dropped_total 5")
        );
    }

    #[test]
    fn gauges_are_set_from_a_snapshot() {
        let m = Metrics::new();
        let queue = QueueStats {
            waiting_upstream: 3,
            retry_delay: 1,
            ready: 7,
            outbox: 2,
            leased_runs: 4,
            ..QueueStats::default()
        };
        m.set_gauges(
            &queue,
            PoolStats {
                workers: 2,
                slots: 8,
                busy: 5,
            },
        );
        let text = m.encode();
        for line in [
            "ork_queue_depth{reason=\"ready\"} 7",
            "ork_queue_depth{reason=\"upstream\"} 3",
            "ork_mirror_backlog 2",
            "ork_leased_runs 4",
            "ork_pool_slots_busy 5",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }
}
