//! The state store: the source of truth for workflows, runs, task runs,
//! attempts, logs and the mirror's outbox.
//!
//! The store's port is split by role, each trait small and used by few
//! components: [`Definitions`] (deployed workflows), [`Runs`] (runs, their
//! task runs, attempts and logs, as the API reads and changes them),
//! [`RunHistory`] (ListRuns: filters, labels, keyset pages),
//! [`RunRequests`] (idempotent starts), [`Schedules`] (pausing schedules),
//! [`Events`] (events start runs once per id), [`Versions`] (list, pick
//! and roll back versions), [`Attempts`] (what workers report),
//! [`Scheduling`] (leases, claims, timers, cron) and [`Outbox`] (the
//! mirror's feed). [`StateStore`] is all of
//! them; one conformance suite (`tests/state_conformance.rs`) covers every
//! role on every backend.
//!
//! Every method that changes state is one transaction, and coarse on purpose
//! (a report records the attempt *and* readies its successors), so a crash
//! between two steps of one transition cannot happen. What each transition
//! does is decided in `ork_domain` (`attempt`, `decide`); `transitions.rs`
//! and `advance.rs` apply the decisions through the narrow interface of
//! `sql.rs`, written once for both backends.

mod advance;
mod committed;
pub mod events;
pub mod postgres;
mod records;
mod rows;
pub mod run_history;
pub mod run_requests;
pub mod schedules;
mod sql;
pub mod sqlite;
mod store;
pub mod tokens;
mod transitions;
pub mod versions;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;

pub use committed::{AttemptOutcome, FinishedAttempt, Transition};
pub use events::{Events, Published};
pub use ork_domain::attempt::Report;
pub use records::*;
pub use run_history::{PageKey, RunHistory, RunPage, RunQuery};
pub use run_requests::RunRequests;
pub use schedules::{ScheduleState, Schedules};
pub use store::Store;
pub use versions::{VersionRecord, Versions};

/// Every role trait, for `use ork_server::state::prelude::*`.
pub mod prelude {
    pub use super::{
        Attempts, Definitions, Events, Outbox, RunHistory, RunRequests, Runs, Schedules,
        Scheduling, StateStore, Versions,
    };
}

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} not found")]
    NotFound { what: String },
    /// A worker call for an attempt that is no longer the current one.
    #[error(
        "stale attempt: task run {task_run_id} is at attempt {current_attempt} ({status}); the call for attempt {attempt} was ignored"
    )]
    Stale {
        task_run_id: String,
        attempt: u32,
        current_attempt: u32,
        status: String,
    },
    #[error("{0}")]
    InvalidArgument(String),
    /// A reported output does not match the task's `output_type`; nothing
    /// was written.
    #[error("{0}")]
    InvalidOutput(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error(
        "unsupported state store url `{0}`: use sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DATABASE"
    )]
    UnsupportedUrl(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where outputs too large to keep in the database live (the object store).
/// Keys are built by the server from ids it generated.
#[async_trait]
pub trait OutputStore: Send + Sync + 'static {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> std::result::Result<(), String>;
    async fn get(&self, key: &str) -> std::result::Result<Vec<u8>, String>;
}

/// The key of the marker a stored-by-reference output leaves in the
/// database (and in `GetRun`): `{"$ork_output_ref": {"key": …, "bytes": …}}`.
pub const OUTPUT_REF_KEY: &str = "$ork_output_ref";

/// The object key of an output stored by reference, if `value` is a marker.
pub fn output_ref(value: &serde_json::Value) -> Option<&str> {
    let object = value.as_object()?;
    if object.len() != 1 {
        return None;
    }
    object.get(OUTPUT_REF_KEY)?.get("key")?.as_str()
}

/// Deployed workflows: immutable versions addressed by content.
#[async_trait]
pub trait Definitions: Send + Sync {
    /// Stores a new version unless the content hash is already the newest
    /// version; returns the workflow and whether a version was created.
    async fn deploy_workflow(
        &self,
        deploy: NewWorkflowVersion,
        now: DateTime<Utc>,
    ) -> Result<(WorkflowRecord, bool)>;
    async fn get_workflow(&self, name: &str) -> Result<Option<WorkflowRecord>>;
    async fn list_workflows(&self) -> Result<Vec<WorkflowRecord>>;
    /// Returns false when no such workflow exists.
    async fn delete_workflow(&self, name: &str) -> Result<bool>;
    async fn get_version(&self, version: &str) -> Result<Option<Arc<CompiledVersion>>>;
    async fn get_version_file(&self, version: &str, path: &str) -> Result<Option<Vec<u8>>>;
}

/// Runs as people see and steer them: create, read, cancel, retry, logs.
#[async_trait]
pub trait Runs: Send + Sync {
    /// Creates the run and its task runs, readying the roots, in one transaction.
    async fn create_run(&self, new: NewRun, now: DateTime<Utc>) -> Result<RunRecord>;
    async fn get_run(&self, id: &str) -> Result<Option<RunRecord>>;
    async fn list_runs(&self, workflow: Option<&str>, limit: u32) -> Result<Vec<RunRecord>>;
    async fn list_task_runs(&self, run_id: &str) -> Result<Vec<TaskRunRecord>>;
    async fn get_task_run(&self, id: &str) -> Result<Option<TaskRunRecord>>;
    /// Task runs by id, in one query (ids not found are left out).
    async fn get_task_runs(&self, ids: &[String]) -> Result<Vec<TaskRunRecord>>;
    async fn list_attempts(&self, task_run_id: &str) -> Result<Vec<AttemptRecord>>;
    /// Every attempt of the task runs `task_run_ids`, in one query.
    async fn get_attempts(&self, task_run_ids: &[String]) -> Result<Vec<AttemptRecord>>;
    /// How many log lines (and bytes) each attempt of `task_run_ids` has,
    /// for attempts with any.
    async fn log_sizes(&self, task_run_ids: &[String]) -> Result<Vec<LogSize>>;
    /// Every log line of the task runs `task_run_ids`, in order (for a few
    /// small logs at once; a large one is read with [`Runs::get_logs`]).
    async fn get_task_run_logs(&self, task_run_ids: &[String]) -> Result<Vec<LogRecord>>;
    /// Every attempt of every task run of a run, in one query.
    async fn list_run_attempts(&self, run_id: &str) -> Result<Vec<AttemptRecord>>;
    /// Ends the run `cancelled`; returns the attempts that were out with workers.
    async fn cancel_run(&self, id: &str, now: DateTime<Utc>) -> Result<Vec<ActiveAttempt>>;
    /// Re-runs failed, cancelled and skipped tasks (or `task` and everything
    /// downstream of it) of a finished run.
    async fn retry_run(
        &self,
        id: &str,
        task: Option<&str>,
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<()>;
    async fn get_logs(&self, query: &LogQuery) -> Result<Vec<LogRecord>>;
}

/// What workers report for their attempts. Every call is fenced.
#[async_trait]
pub trait Attempts: Send + Sync {
    /// What a worker needs to run the attempt `fence` names.
    async fn attempt_spec(&self, fence: &Fence) -> Result<AttemptSpec>;

    /// Applies reports in one transaction, in order; each gets its own
    /// answer (a stale fence or an invalid output refuses that report alone
    /// and changes nothing of it). The outer error is a failed transaction:
    /// nothing of the batch was written.
    async fn report(
        &self,
        reports: &[(Fence, Report)],
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<()>>>;

    /// Marks the attempt running.
    async fn start_attempt(&self, fence: &Fence, now: DateTime<Utc>) -> Result<()> {
        self.report_one(fence, Report::Start, now).await
    }
    /// Records the attempt's output and moves its run forward (a report
    /// without task metrics; [`Report::Complete`] carries them).
    async fn complete_attempt(
        &self,
        fence: &Fence,
        output: serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.report_one(fence, Report::Complete(output, Vec::new()), now)
            .await
    }
    /// Fails an attempt; retries it when its policy allows.
    async fn fail_attempt(
        &self,
        fence: &Fence,
        failure: &Failure,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.report_one(fence, Report::Fail(failure.clone(), Vec::new()), now)
            .await
    }
    /// One report in a transaction of its own.
    async fn report_one(&self, fence: &Fence, report: Report, now: DateTime<Utc>) -> Result<()> {
        let mut results = self.report(&[(fence.clone(), report)], now).await?;
        results
            .pop()
            .unwrap_or_else(|| Err(Error::Corrupt("a report got no answer".to_owned())))
    }

    /// Checks heartbeats in one read: each answer is true when that attempt
    /// must stop (cancelled), or an error for a stale or unknown fence. The
    /// beats themselves are remembered and written together by
    /// [`Attempts::flush_heartbeats`], so a beat costs no commit.
    async fn heartbeats(&self, beats: &[Fence], now: DateTime<Utc>) -> Result<Vec<Result<bool>>>;
    /// One heartbeat; see [`Attempts::heartbeats`].
    async fn heartbeat(&self, fence: &Fence, now: DateTime<Utc>) -> Result<bool> {
        let mut answers = self.heartbeats(std::slice::from_ref(fence), now).await?;
        answers
            .pop()
            .unwrap_or_else(|| Err(Error::Corrupt("a heartbeat got no answer".to_owned())))
    }
    /// Writes the remembered heartbeats, in one transaction.
    async fn flush_heartbeats(&self) -> Result<()>;
    async fn append_logs(&self, fence: &Fence, lines: &[NewLogLine]) -> Result<()>;
    /// Checks an output against its task's `output_type` without writing it
    /// (for outputs stored by reference, before they are uploaded).
    async fn check_output(&self, fence: &Fence, output: &serde_json::Value) -> Result<()>;
}

/// What the scheduler needs: leases, claims, timers, waiting runs, cron.
#[async_trait]
pub trait Scheduling: Send + Sync {
    // ---- leases: one owner per run ----
    /// Takes over up to `limit` unfinished runs that have no owner or whose
    /// owner's lease expired; returns their ids.
    async fn acquire_runs(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<String>>;
    /// Extends every lease `owner` still holds; returns how many.
    async fn renew_leases(&self, owner: &str, now: DateTime<Utc>) -> Result<u64>;
    /// Gives up `owner`'s leases (clean shutdown) so another replica takes
    /// its runs over at once.
    async fn release_leases(&self, owner: &str) -> Result<()>;

    // ---- claims ----
    /// Claims up to `limit` ready task runs of runs `owner` holds a live
    /// lease on: each gets a new attempt and token.
    /// Never more than `capacity` allows: launched attempts up to its
    /// `launched` slots, pool tasks up to the free slots of their handler.
    async fn claim_ready(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        limit: u32,
        capacity: &Capacity,
    ) -> Result<Vec<Claim>>;
    /// Undoes a claim the executor could not launch (no free pool slot after
    /// all): the task run is pending again and the attempt number unused.
    /// Only for a claim nobody ever received: its token never left the
    /// server, so no worker can report for the attempt it names. Returns
    /// false when the claim already moved on.
    async fn release_claim(&self, fence: &Fence) -> Result<bool>;

    // ---- timers ----
    /// Attempts past their deadline, or silent for longer than `heartbeat_timeout`.
    async fn expired_attempts(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        heartbeat_timeout: std::time::Duration,
    ) -> Result<Vec<ExpiredAttempt>>;
    /// At start-up: gives attempts of `owner`'s runs, left running by its
    /// previous process, one heartbeat timeout to call back before they are
    /// declared lost.
    async fn recover(&self, owner: &str, now: DateTime<Utc>) -> Result<u64>;
    /// Counts what waits and what runs, for the gauges of `/metrics`.
    async fn queue_stats(&self, owner: &str, now: DateTime<Utc>) -> Result<QueueStats>;
    /// Starts runs that wait on their workflow's `concurrency`, oldest first,
    /// as far as the cap allows; returns how many started.
    async fn promote_pending_runs(&self, owner: &str, now: DateTime<Utc>) -> Result<u32>;
    /// Wake-ups caused by other replicas' commits (a report received by one
    /// replica for a run another owns). `None` when the store serves one
    /// process, whose commits wake its scheduler directly.
    async fn wakeups(&self, owner: &str) -> Result<Option<BoxStream<'static, ()>>>;
    /// The earliest time a pending retry becomes ready, to sleep until then.
    async fn next_ready_at(&self) -> Result<Option<DateTime<Utc>>>;
    /// Pool task runs (`executor: workers`) of runs `owner` holds a live
    /// lease on that have been ready since before `ready_before` and are
    /// still pending, as `(task run id, handler)`, oldest first, at most
    /// `limit`: what the schedule-to-start timeout looks at.
    async fn waiting_pool_tasks(
        &self,
        owner: &str,
        ready_before: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(String, String)>>;
    /// Fails a task run that is still pending, without an attempt (it could
    /// not be scheduled in time), and moves its run on as any failure does.
    /// Returns false, changing nothing, when it is no longer pending.
    async fn fail_pending(
        &self,
        task_run_id: &str,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<bool>;

    // ---- cron ----
    /// Workflows with a `schedule`, each with its latest recorded fire.
    async fn scheduled_workflows(&self) -> Result<Vec<(WorkflowRecord, Option<DateTime<Utc>>)>>;
    /// Creates the run of one schedule fire, unless some scheduler already
    /// did: the fire is recorded under a unique key in the run's transaction.
    async fn fire_schedule(
        &self,
        workflow: &str,
        fire_time: DateTime<Utc>,
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<RunRecord>>;
}

/// The mirror's feed: what changed, written in the same transactions. Each
/// replica's mirror claims a share of it, so replicas do not all copy the
/// same changes.
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Claims up to `limit` entries for `owner` until `now + lease`, oldest
    /// first: entries nobody holds or whose holder let its claim lapse (it
    /// died), and never one whose key another mirror holds entries of, so
    /// that two mirrors never copy one run at once (the later write could
    /// carry the older state).
    async fn outbox_claim(
        &self,
        owner: &str,
        limit: u32,
        now: DateTime<Utc>,
        lease: std::time::Duration,
    ) -> Result<Vec<OutboxEntry>>;
    /// Deletes entries that were copied.
    async fn outbox_ack(&self, ids: &[i64]) -> Result<()>;
}

/// The whole store: every role.
pub trait StateStore:
    Definitions
    + Runs
    + RunHistory
    + RunRequests
    + Schedules
    + Events
    + Versions
    + Attempts
    + Scheduling
    + Outbox
    + 'static
{
    /// Gives the store the object store that holds large outputs, so runs
    /// can read them back when resolving downstream inputs.
    fn set_output_store(&self, outputs: Arc<dyn OutputStore>);
    /// The signal the store fires after each commit (see [`crate::notify`]).
    fn notifier(&self) -> crate::notify::Notifier;
    /// How many write transactions are worth running at once: 1 when the
    /// store has a single writer.
    fn writers(&self) -> usize;
}

/// Opens the store named by a URL (`sqlite://PATH`, `sqlite::memory:`,
/// `postgres://USER:PASSWORD@HOST:PORT/DATABASE`, or `postgresql://...`).
pub async fn open(url: &str, limits: Limits) -> Result<Arc<dyn StateStore>> {
    Ok(open_stores(url, limits).await?.state)
}

/// The stores of one database: runs and everything they own, and API tokens.
#[derive(Clone)]
pub struct Stores {
    pub state: Arc<dyn StateStore>,
    pub tokens: Arc<dyn tokens::TokenStore>,
}

/// Opens the database named by a URL (as [`open`]) with every store in it.
pub async fn open_stores(url: &str, limits: Limits) -> Result<Stores> {
    if url.starts_with("sqlite:") {
        let store = sqlite::SqliteStore::open(url, limits).await?;
        let tokens = Arc::new(store.tokens());
        return Ok(Stores {
            state: Arc::new(store),
            tokens,
        });
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = postgres::PostgresStore::open(url, limits).await?;
        let tokens = Arc::new(store.tokens());
        return Ok(Stores {
            state: Arc::new(store),
            tokens,
        });
    }
    Err(Error::UnsupportedUrl(url.to_owned()))
}
