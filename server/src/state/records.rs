//! Plain records the state store reads and writes.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
pub use ork_domain::attempt::{Failure, FailureKind, Fence};
use ork_domain::dag::Dag;
pub use ork_domain::task_metrics::{
    MAX_TASK_METRIC_NAME, MAX_TASK_METRICS, TaskMetric, normalize_task_metrics,
};
use ork_domain::{
    EnvValue, RunStatus, TaskDefinition, TaskStatus, TriggerType, WorkflowDefinition,
};

/// Limits the store enforces inside its transactions.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest number of instances a dynamic fan-out may expand to.
    pub max_fan_out: u32,
    /// How long a run's lease lasts without renewal.
    pub lease: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_fan_out: 10_000,
            lease: std::time::Duration::from_secs(15),
        }
    }
}

/// A validated workflow version to store.
#[derive(Debug, Clone)]
pub struct NewWorkflowVersion {
    pub version: String,
    pub yaml: String,
    pub definition: WorkflowDefinition,
    /// Task files keyed by the path written in the YAML.
    pub files: BTreeMap<String, Vec<u8>>,
}

/// The newest version of a workflow.
#[derive(Debug, Clone)]
pub struct WorkflowRecord {
    pub name: String,
    pub version: Arc<CompiledVersion>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An immutable workflow version with its DAG, cached by the store.
#[derive(Debug)]
pub struct CompiledVersion {
    pub version: String,
    pub yaml: String,
    pub definition: WorkflowDefinition,
    pub dag: Dag,
    pub created_at: DateTime<Utc>,
}

impl CompiledVersion {
    pub fn task(&self, name: &str) -> Option<&TaskDefinition> {
        self.definition.tasks.iter().find(|t| t.name == name)
    }
}

/// A run to create.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub workflow: String,
    pub input: serde_json::Value,
    pub triggered_by: TriggerType,
    /// The scheduler replica that takes the run (the one that received it).
    pub owner: String,
    /// Labels to filter run history by (checked by `ork_domain::labels`).
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub id: String,
    pub workflow: String,
    pub workflow_version: String,
    pub status: RunStatus,
    pub triggered_by: TriggerType,
    pub input: serde_json::Value,
    /// The replica holding the run's lease.
    pub owner: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TaskRunRecord {
    pub id: String,
    pub run_id: String,
    pub task_name: String,
    pub status: TaskStatus,
    pub attempt: u32,
    pub max_retries: u32,
    pub parallel_index: Option<u32>,
    pub parallel_count: Option<u32>,
    pub executor: String,
    pub input: Option<serde_json::Value>,
    pub output: Option<serde_json::Value>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub ready_at: Option<DateTime<Utc>>,
    pub dispatched_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One dispatched attempt of a task run.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub task_run_id: String,
    pub attempt: u32,
    pub status: TaskStatus,
    pub error: Option<String>,
    pub dispatched_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The figures the attempt recorded, by name.
    pub metrics: Vec<TaskMetric>,
}

/// A task run just claimed for dispatch.
#[derive(Debug, Clone)]
pub struct Claim {
    pub fence: Fence,
    pub run_id: String,
    pub task_name: String,
    pub executor: String,
    /// What the attempt runs, read by the claim itself: executors never read
    /// the store.
    pub spec: AttemptSpec,
}

/// An attempt out with a worker when its run was cancelled.
#[derive(Debug, Clone)]
pub struct ActiveAttempt {
    pub fence: Fence,
    pub executor: String,
}

/// An attempt the timer loop must end.
#[derive(Debug, Clone)]
pub struct ExpiredAttempt {
    pub fence: Fence,
    pub executor: String,
    pub kind: FailureKind,
    pub timeout_seconds: u32,
}

/// What a worker needs to run one attempt.
#[derive(Debug, Clone)]
pub struct AttemptSpec {
    pub run_id: String,
    pub workflow: String,
    pub task_name: String,
    pub task_run_id: String,
    pub attempt: u32,
    pub parallel_index: Option<u32>,
    pub parallel_count: Option<u32>,
    pub input: serde_json::Value,
    /// Unresolved: secrets are resolved by the caller, never stored.
    pub env: BTreeMap<String, EnvValue>,
    pub timeout_seconds: u32,
    pub deadline: Option<DateTime<Utc>>,
    pub file: Option<String>,
    pub file_content: Vec<u8>,
    /// The program and arguments to run instead of running `file` by its
    /// extension (with `file`, its path is appended).
    pub command: Option<Vec<String>>,
    /// The interpreter of a `.py` `file`.
    pub python: Option<String>,
    pub config_file: Option<String>,
    pub config_file_content: Vec<u8>,
    pub handler: Option<String>,
    /// For container tasks: the image the worker runs in, when the engine
    /// pulls it, and the CPU and memory quantities.
    pub image: Option<String>,
    pub image_pull_policy: ork_domain::ImagePullPolicy,
    pub cpu: Option<String>,
    pub memory: Option<String>,
}

/// A log line as a worker sends it.
#[derive(Debug, Clone)]
pub struct NewLogLine {
    pub stream: String,
    pub line: String,
    pub time: DateTime<Utc>,
}

/// Which log lines to read.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    pub run_id: String,
    pub task: Option<String>,
    /// Only this attempt of the task run, for the mirror.
    pub task_run_attempt: Option<(String, u32)>,
    /// Lines with an id above this.
    pub after_id: i64,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    pub id: i64,
    pub task_run_id: String,
    pub task_name: String,
    pub parallel_index: Option<u32>,
    pub attempt: u32,
    pub stream: String,
    pub line: String,
    pub time: DateTime<Utc>,
}

/// The size of one attempt's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSize {
    pub task_run_id: String,
    pub attempt: u32,
    pub lines: u64,
    pub bytes: u64,
}

/// What the mirror must bring up to date.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OutboxKind {
    /// `key` is a workflow version.
    Workflow,
    /// `key` is a run id.
    Run,
    /// `key` is a task run id; the attempt is set.
    Attempt,
}

impl OutboxKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            OutboxKind::Workflow => "workflow",
            OutboxKind::Run => "run",
            OutboxKind::Attempt => "attempt",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "workflow" => Some(OutboxKind::Workflow),
            "run" => Some(OutboxKind::Run),
            "attempt" => Some(OutboxKind::Attempt),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: i64,
    pub kind: OutboxKind,
    pub key: String,
    pub attempt: Option<u32>,
}

/// What waits and what runs, for the gauges of `/metrics` (read at scrape
/// time from committed state; the same on every replica except `leased_runs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Pending task runs whose dependencies have not finished (or whose run
    /// waits on its workflow's `concurrency`).
    pub waiting_upstream: u64,
    /// Pending task runs waiting out a retry delay.
    pub retry_delay: u64,
    /// Ready task runs waiting for dispatch (capacity, concurrency caps).
    pub ready: u64,
    pub dispatched: u64,
    pub running: u64,
    /// Runs waiting on their workflow's `concurrency`.
    pub runs_pending: u64,
    pub runs_running: u64,
    /// Outbox entries not mirrored yet.
    pub outbox: u64,
    /// Unfinished runs whose live lease `owner` holds.
    pub leased_runs: u64,
}

/// How much work the executors can take right now; claims never exceed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capacity {
    /// Free slots for launched attempts (every executor but `workers`).
    pub launched: u32,
    /// Free pool slots per handler.
    pub pool: std::collections::BTreeMap<String, u32>,
}

impl Default for Capacity {
    /// Unlimited launches, no pool workers.
    fn default() -> Self {
        Self {
            launched: u32::MAX,
            pool: std::collections::BTreeMap::new(),
        }
    }
}
