//! The production store: PostgreSQL through sqlx, shared by several
//! `ork server` replicas.
//!
//! Transactions run at READ COMMITTED and serialize on row locks, never on
//! SERIALIZABLE retries:
//! - claims lock the task runs they take with `FOR UPDATE SKIP LOCKED`, so two
//!   replicas never dispatch the same attempt and never wait on each other;
//! - everything that moves a run forward (reports, cancel, retry) first locks
//!   the run's row, then the task run's. Two reports of one run therefore
//!   apply one after the other, and the second sees what the first readied
//!   (without the run lock, two fan-in reports committing together could each
//!   see the other still running and leave their successor waiting forever);
//! - the few deadlocks left possible (a bulk update against a report) are
//!   retried, whole, a few times.
//!
//! Connection loss surfaces as [`Error::Database`]; the pool reconnects on
//! its own, and the scheduler loops retry with backoff.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use ork_domain::dag::Dag;
use ork_domain::decide::{self, DepSummary, RunTally};
use ork_domain::{
    Parallelism, RunStatus, TaskDefinition, TaskStatus, TriggerType, WorkflowDefinition,
};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPoolOptions, PgRow};
use sqlx::{Connection, PgPool, Postgres, QueryBuilder};

use super::advance::{self, NewInstance, OutputRow, RunTx, UnreadyRow};
use super::observe::ObserverSlot;
use super::rows::*;
use super::*;

/// Rows per multi-row INSERT (16 parameters each, far below PostgreSQL's
/// 65,535 bound parameters per statement).
const INSERT_CHUNK: usize = 1000;
/// Connections per replica.
const MAX_CONNECTIONS: u32 = 16;
/// How long `open` keeps trying to reach the server (it may be starting too).
const CONNECT_PATIENCE: Duration = Duration::from_secs(30);
/// How many times a transaction that lost a deadlock is run again.
const CONFLICT_RETRIES: u32 = 5;

/// The `LISTEN/NOTIFY` channel of cross-replica wake-ups. Its payload is the
/// owner to wake, or `*` for every replica.
pub const WAKE_CHANNEL: &str = "ork_wake";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// PostgreSQL implementation of [`StateStore`].
pub struct PostgresStore {
    pool: PgPool,
    versions: Mutex<HashMap<String, Arc<CompiledVersion>>>,
    limits: Limits,
    /// Where large outputs live; set once by the server.
    outputs: std::sync::OnceLock<Arc<dyn OutputStore>>,
    /// Told the changes of each committed transaction.
    observer: ObserverSlot,
}

impl PostgresStore {
    /// Connects to and migrates the database at `url`
    /// (`postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=...`), waiting up
    /// to 30 s for the server to accept connections.
    pub async fn open(url: &str, limits: Limits) -> Result<Self> {
        Self::open_with_patience(url, limits, CONNECT_PATIENCE).await
    }

    /// [`PostgresStore::open`] with a bound on the wait for the server.
    pub async fn open_with_patience(url: &str, limits: Limits, patience: Duration) -> Result<Self> {
        let options = PgConnectOptions::from_str(url).map_err(|e| {
            Error::InvalidArgument(format!("invalid PostgreSQL url `{}`: {e}", redact(url)))
        })?;
        let pool_options = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            // A connection the server dropped (restart, failover) is noticed
            // before use and replaced, instead of failing a query.
            .test_before_acquire(true);
        // Probe with single connections first: the pool's own connect retries
        // for a whole acquire timeout, which would blur the bound below.
        let started = Instant::now();
        let mut delay = Duration::from_millis(200);
        loop {
            let remaining = patience
                .saturating_sub(started.elapsed())
                .max(Duration::from_millis(100));
            let attempt =
                tokio::time::timeout(remaining, PgConnection::connect_with(&options)).await;
            let e = match attempt {
                Ok(Ok(probe)) => {
                    let _ = probe.close().await;
                    break;
                }
                Ok(Err(e)) => e,
                Err(_) => sqlx::Error::PoolTimedOut,
            };
            if is_transient(&e) && started.elapsed() + delay < patience {
                tracing::warn!(url = %redact(url), error = %e, "PostgreSQL is not reachable yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
                continue;
            }
            let waited = if is_transient(&e) {
                format!(" after trying for {} s", started.elapsed().as_secs())
            } else {
                String::new()
            };
            return Err(Error::Database(sqlx::Error::Io(std::io::Error::other(
                format!(
                    "cannot connect to PostgreSQL at {}{waited}: {e}; check that the server is up and the url, user and password are right",
                    redact(url)
                ),
            ))));
        }
        let pool = pool_options.connect_with(options).await?;
        // Replicas starting together serialize here: sqlx takes an advisory lock.
        MIGRATOR.run(&pool).await?;
        Ok(Self {
            pool,
            versions: Mutex::new(HashMap::new()),
            outputs: std::sync::OnceLock::new(),
            limits,
            observer: ObserverSlot::default(),
        })
    }

    /// The token store in this database, on the same pool.
    pub fn tokens(&self) -> super::tokens::PostgresTokens {
        super::tokens::PostgresTokens::new(self.pool.clone())
    }

    /// Wake-ups for `owner` sent by other replicas (a report they received
    /// for one of its runs, a run that ended): `LISTEN` on [`WAKE_CHANNEL`].
    /// After a lost connection the listener reconnects and yields once, since
    /// notifications sent meanwhile are gone.
    pub async fn listen_wakeups(&self, owner: &str) -> Result<BoxStream<'static, ()>> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(WAKE_CHANNEL).await?;
        let owner = owner.to_owned();
        let stream = futures::stream::unfold(listener, move |mut listener| {
            let owner = owner.clone();
            async move {
                loop {
                    match listener.try_recv().await {
                        Ok(Some(note)) if note.payload() == owner || note.payload() == "*" => {
                            return Some(((), listener));
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => return Some(((), listener)),
                        Err(e) => {
                            tracing::warn!(error = %e, "listening for wake-ups failed; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            }
        });
        Ok(Box::pin(stream))
    }

    fn lease_ms(&self) -> i64 {
        duration_ms(self.limits.lease)
    }

    async fn compiled(&self, version: &str) -> Result<Arc<CompiledVersion>> {
        self.get_version(version)
            .await?
            .ok_or_else(|| Error::Corrupt(format!("workflow version {version} is missing")))
    }

    /// Like `compiled`, but loads through `conn`: a transaction must never
    /// wait for a second pooled connection, or concurrent transactions can
    /// starve the pool and deadlock.
    async fn compiled_in(
        &self,
        conn: &mut PgConnection,
        version: &str,
    ) -> Result<Arc<CompiledVersion>> {
        if let Some(found) = self.cached_version(version) {
            return Ok(found);
        }
        self.load_version(conn, version)
            .await?
            .ok_or_else(|| Error::Corrupt(format!("workflow version {version} is missing")))
    }

    fn cached_version(&self, version: &str) -> Option<Arc<CompiledVersion>> {
        self.versions
            .lock()
            .ok()
            .and_then(|m| m.get(version).cloned())
    }

    async fn load_version(
        &self,
        conn: &mut PgConnection,
        version: &str,
    ) -> Result<Option<Arc<CompiledVersion>>> {
        let Some(row) = sqlx::query(
            "SELECT version, yaml, definition, created_at FROM workflow_versions WHERE version = $1",
        )
        .bind(version)
        .fetch_optional(&mut *conn)
        .await?
        else {
            return Ok(None);
        };
        let text = row.text("definition")?;
        let definition: WorkflowDefinition = serde_json::from_str(&text)
            .map_err(|e| Error::Corrupt(format!("definition of version {version}: {e}")))?;
        let dag = Dag::new(&definition)
            .map_err(|e| Error::Corrupt(format!("definition of version {version}: {e}")))?;
        let compiled = Arc::new(CompiledVersion {
            version: row.text("version")?,
            yaml: row.text("yaml")?,
            definition,
            dag,
            created_at: from_ms(row.int("created_at")?),
        });
        if let Ok(mut cache) = self.versions.lock() {
            cache.insert(version.to_owned(), compiled.clone());
        }
        Ok(Some(compiled))
    }

    async fn workflow_record(&self, row: &PgRow) -> Result<WorkflowRecord> {
        let version = row.text("current_version")?;
        Ok(WorkflowRecord {
            name: row.text("name")?,
            version: self.compiled(&version).await?,
            created_at: from_ms(row.int("created_at")?),
            updated_at: from_ms(row.int("updated_at")?),
        })
    }
}

/// The url with its password replaced, fit for logs and error messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "(an unparseable url)".to_owned(),
    }
}

/// Errors worth waiting out at start-up: the server is down, starting, or
/// out of connections.
fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 57P03 cannot_connect_now, 53300 too_many_connections, 08 connection exceptions.
            code == "57P03" || code == "53300" || code.starts_with("08")
        }),
        _ => false,
    }
}

/// Deadlocks and serialization failures: the transaction did nothing and may
/// simply run again.
fn is_conflict(e: &Error) -> bool {
    match e {
        Error::Database(sqlx::Error::Database(db)) => db
            .code()
            .is_some_and(|code| code == "40P01" || code == "40001"),
        _ => false,
    }
}

/// Runs `op` again while it loses to a deadlock, a few times at most.
async fn retrying<T, F, Fut>(mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut tries = 0;
    loop {
        match op().await {
            Err(e) if is_conflict(&e) && tries < CONFLICT_RETRIES => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(5 << tries)).await;
            }
            other => return other,
        }
    }
}

// ---------- locks and fenced reads ----------

/// Which lock a fenced read takes on the task run row.
#[derive(Clone, Copy)]
enum RowLock {
    None,
    Share,
    Update,
}

/// Locks the run a task run belongs to, before the task run itself: the lock
/// order (run, then task run) every transaction that advances a run follows.
async fn lock_run_of(conn: &mut PgConnection, task_run_id: &str) -> Result<()> {
    sqlx::query(
        "SELECT id FROM runs WHERE id = (SELECT run_id FROM task_runs WHERE id = $1) FOR UPDATE",
    )
    .bind(task_run_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(())
}

/// Loads the task run named by `fence` and rejects the call unless the fence
/// is the current attempt and its status is one of `allowed`.
async fn check_fence(
    conn: &mut PgConnection,
    fence: &Fence,
    allowed: &[TaskStatus],
    lock: RowLock,
) -> Result<FencedRow> {
    let lock = match lock {
        RowLock::None => "",
        RowLock::Share => " FOR SHARE OF t",
        RowLock::Update => " FOR UPDATE OF t",
    };
    let row = sqlx::query(&format!(
        "SELECT {FENCED_COLUMNS} FROM task_runs t JOIN runs r ON r.id = t.run_id WHERE t.id = $1{lock}"
    ))
    .bind(&fence.task_run_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| Error::NotFound {
        what: format!("task run {}", fence.task_run_id),
    })?;
    let status = task_status(&row.text("status")?)?;
    let attempt = to_u32(row.int("attempt")?);
    let token = row.opt_text("token")?;
    let current = attempt == fence.attempt && token.as_deref() == Some(fence.token.as_str());
    if !current || !allowed.contains(&status) {
        return Err(Error::Stale {
            task_run_id: fence.task_run_id.clone(),
            attempt: fence.attempt,
            current_attempt: attempt,
            status: status.to_string(),
        });
    }
    fenced_row(&row, status)
}

/// True when this very attempt already ended with `outcome`: a worker whose
/// report committed but whose reply was lost retries it, and must hear "ok".
/// Call it with the task run locked, so a concurrent twin report is seen.
async fn already_settled(
    conn: &mut PgConnection,
    fence: &Fence,
    outcome: TaskStatus,
) -> Result<bool> {
    let row = sqlx::query(
        "SELECT t.attempt, t.token, a.status FROM task_runs t \
         JOIN attempts a ON a.task_run_id = t.id AND a.attempt = $2 WHERE t.id = $1",
    )
    .bind(&fence.task_run_id)
    .bind(i64::from(fence.attempt))
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(false) };
    let same_attempt = to_u32(row.int("attempt")?) == fence.attempt
        && row.opt_text("token")?.as_deref() == Some(fence.token.as_str());
    Ok(same_attempt && row.text("status")? == outcome.as_str())
}

async fn insert_outbox(
    conn: &mut PgConnection,
    kind: OutboxKind,
    key: &str,
    attempt: Option<u32>,
) -> Result<()> {
    sqlx::query("INSERT INTO outbox (kind, key, attempt, created_at) VALUES ($1, $2, $3, $4)")
        .bind(kind.as_str())
        .bind(key)
        .bind(attempt.map(i64::from))
        .bind(ms(Utc::now()))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Wakes the owner of `run_id` once this transaction commits (PostgreSQL
/// delivers notifications at commit, one per distinct payload); a run that
/// ended wakes every replica, since runs waiting on its workflow's
/// `concurrency` may belong to any of them.
async fn notify_owner(conn: &mut PgConnection, run_id: &str) -> Result<()> {
    sqlx::query(
        "SELECT pg_notify($2, CASE WHEN status IN ('pending', 'running') THEN COALESCE(owner, '*') \
         ELSE '*' END) FROM runs WHERE id = $1",
    )
    .bind(run_id)
    .bind(WAKE_CHANNEL)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Stores the metrics an attempt recorded (last value per name wins).
async fn insert_metrics(
    conn: &mut PgConnection,
    fence: &Fence,
    metrics: &[TaskMetric],
) -> Result<()> {
    if metrics.is_empty() {
        return Ok(());
    }
    let mut qb: QueryBuilder<'_, Postgres> =
        QueryBuilder::new("INSERT INTO attempt_metrics (task_run_id, attempt, name, value) ");
    qb.push_values(metrics, |mut b, m| {
        b.push_bind(fence.task_run_id.as_str())
            .push_bind(i64::from(fence.attempt))
            .push_bind(m.name.as_str())
            .push_bind(m.value);
    });
    qb.push(" ON CONFLICT (task_run_id, attempt, name) DO UPDATE SET value = excluded.value");
    qb.build().execute(&mut *conn).await?;
    Ok(())
}

async fn insert_task_runs(
    conn: &mut PgConnection,
    run_id: &str,
    rows: &[NewTaskRunRow<'_>],
    now: DateTime<Utc>,
) -> Result<()> {
    for chunk in rows.chunks(INSERT_CHUNK) {
        let mut qb: QueryBuilder<'_, Postgres> = QueryBuilder::new(
            "INSERT INTO task_runs (id, run_id, task_name, status, max_retries, timeout_seconds, concurrency, handler, \
             parallel_index, parallel_count, item, executor, input, error, created_at, ready_at, finished_at) ",
        );
        qb.push_values(chunk, |mut b, r| {
            b.push_bind(r.id.clone())
                .push_bind(run_id.to_owned())
                .push_bind(r.task.name.clone())
                .push_bind(r.status.as_str())
                .push_bind(i64::from(r.task.retries))
                .push_bind(i64::from(r.task.timeout_seconds))
                .push_bind(r.task.concurrency.map(i64::from))
                .push_bind(r.task.handler.clone())
                .push_bind(r.parallel_index.map(i64::from))
                .push_bind(r.parallel_count.map(i64::from))
                .push_bind(r.item.map(json_text))
                .push_bind(r.task.executor.clone())
                .push_bind(r.input.clone())
                .push_bind(r.error.clone())
                .push_bind(ms(now))
                .push_bind(r.ready_at)
                .push_bind(r.finished_at);
        });
        qb.build().execute(&mut *conn).await?;
    }
    Ok(())
}

// ---------- the transaction primitives of `advance` ----------

struct Tx<'c> {
    conn: &'c mut PgConnection,
    outputs: Option<Arc<dyn OutputStore>>,
    changes: &'c mut Vec<Change>,
}

impl RunTx for Tx<'_> {
    async fn load_output(&mut self, key: &str) -> Result<Value> {
        let store = self.outputs.as_ref().ok_or_else(|| {
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

    async fn run_input(&mut self, run_id: &str) -> Result<Value> {
        let text: String = sqlx::query_scalar("SELECT input FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_one(&mut *self.conn)
            .await?;
        parse_json(&text)
    }

    async fn dep_summaries(&mut self, run_id: &str, deps: &[String]) -> Result<Vec<DepSummary>> {
        if deps.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT task_name, COUNT(*) AS total, \
             COUNT(*) FILTER (WHERE status = 'success') AS succeeded, \
             COUNT(*) FILTER (WHERE status IN ('failed', 'skipped', 'cancelled')) AS unsuccessful \
             FROM task_runs WHERE run_id = $1 AND task_name = ANY($2) GROUP BY task_name",
        )
        .bind(run_id)
        .bind(deps)
        .fetch_all(&mut *self.conn)
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

    async fn unready_rows(&mut self, run_id: &str, task: &str) -> Result<Vec<UnreadyRow>> {
        let rows = sqlx::query(
            "SELECT id, parallel_index, parallel_count, item FROM task_runs \
             WHERE run_id = $1 AND task_name = $2 AND status = 'pending' AND ready_at IS NULL \
             ORDER BY parallel_index",
        )
        .bind(run_id)
        .bind(task)
        .fetch_all(&mut *self.conn)
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

    async fn outputs(&mut self, run_id: &str, tasks: &[String]) -> Result<Vec<OutputRow>> {
        let rows = sqlx::query(
            "SELECT task_name, parallel_index, status, output FROM task_runs \
             WHERE run_id = $1 AND task_name = ANY($2)",
        )
        .bind(run_id)
        .bind(tasks)
        .fetch_all(&mut *self.conn)
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

    async fn set_ready(&mut self, id: &str, input: &Value, now: DateTime<Utc>) -> Result<()> {
        sqlx::query("UPDATE task_runs SET input = $1, ready_at = $2 WHERE id = $3")
            .bind(json_text(input))
            .bind(ms(now))
            .bind(id)
            .execute(&mut *self.conn)
            .await?;
        Ok(())
    }

    async fn finish_unstarted(
        &mut self,
        id: &str,
        status: TaskStatus,
        output: Option<&Value>,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE task_runs SET status = $1, output = $2, error = $3, finished_at = $4, \
             parallel_count = CASE WHEN $1 = 'success' AND parallel_index IS NULL AND $2 = '[]' THEN 0 ELSE parallel_count END \
             WHERE id = $5",
        )
        .bind(status.as_str())
        .bind(output.map(json_text))
        .bind(error)
        .bind(ms(now))
        .bind(id)
        .execute(&mut *self.conn)
        .await?;
        Ok(())
    }

    async fn expand(
        &mut self,
        run_id: &str,
        placeholder_id: &str,
        task: &TaskDefinition,
        instances: &[NewInstance],
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query("DELETE FROM task_runs WHERE id = $1")
            .bind(placeholder_id)
            .execute(&mut *self.conn)
            .await?;
        let rows = instance_rows(task, instances, now);
        insert_task_runs(self.conn, run_id, &rows, now).await
    }

    async fn has_unfinished(&mut self, run_id: &str, task: Option<&str>) -> Result<bool> {
        let found: bool =
            match task {
                Some(task) => sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM task_runs WHERE run_id = $1 AND task_name = $2 \
                 AND status IN ('pending', 'dispatched', 'running'))",
                )
                .bind(run_id)
                .bind(task)
                .fetch_one(&mut *self.conn)
                .await?,
                None => {
                    sqlx::query_scalar(
                        "SELECT EXISTS (SELECT 1 FROM task_runs WHERE run_id = $1 \
                 AND status IN ('pending', 'dispatched', 'running'))",
                    )
                    .bind(run_id)
                    .fetch_one(&mut *self.conn)
                    .await?
                }
            };
        Ok(found)
    }

    async fn tally(&mut self, run_id: &str) -> Result<RunTally> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM task_runs WHERE run_id = $1 GROUP BY status",
        )
        .bind(run_id)
        .fetch_all(&mut *self.conn)
        .await?;
        let mut tally = RunTally {
            total: 0,
            unfinished: 0,
            success: 0,
            failed: 0,
            skipped: 0,
            cancelled: 0,
        };
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

    async fn finish_run(
        &mut self,
        run_id: &str,
        status: RunStatus,
        now: DateTime<Utc>,
    ) -> Result<Option<EndedRun>> {
        let ended: Option<(String, i64, Option<i64>)> = sqlx::query_as(
            "UPDATE runs SET status = $1, finished_at = $2 WHERE id = $3 AND status IN ('pending', 'running') \
             RETURNING workflow, created_at, started_at",
        )
        .bind(status.as_str())
        .bind(ms(now))
        .bind(run_id)
        .fetch_optional(&mut *self.conn)
        .await?;
        Ok(ended.map(|(workflow, created_at, started_at)| EndedRun {
            workflow,
            created_at,
            started_at,
        }))
    }

    async fn outbox(&mut self, kind: OutboxKind, key: &str, attempt: Option<u32>) -> Result<()> {
        insert_outbox(self.conn, kind, key, attempt).await
    }

    fn changes(&mut self) -> &mut Vec<Change> {
        self.changes
    }
}

// ---------- transactions, run again on deadlock by the trait methods ----------

impl PostgresStore {
    async fn deploy_once(
        &self,
        deploy: &NewWorkflowVersion,
        name: &str,
        definition: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let current: Option<String> =
            sqlx::query_scalar("SELECT current_version FROM workflows WHERE name = $1 FOR UPDATE")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        let created = current.as_deref() != Some(deploy.version.as_str());
        if created {
            sqlx::query(
                "INSERT INTO workflow_versions (version, workflow, yaml, definition, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(&deploy.version)
            .bind(name)
            .bind(&deploy.yaml)
            .bind(definition)
            .bind(ms(now))
            .execute(&mut *tx)
            .await?;
            for (path, content) in &deploy.files {
                let hash = crate::hash::sha256_hex(content);
                sqlx::query(
                    "INSERT INTO files (hash, content) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                )
                .bind(&hash)
                .bind(content.as_slice())
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO workflow_files (version, path, hash) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                )
                .bind(&deploy.version)
                .bind(path)
                .bind(&hash)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "INSERT INTO workflows (name, current_version, created_at, updated_at) VALUES ($1, $2, $3, $3) \
                 ON CONFLICT (name) DO UPDATE SET current_version = excluded.current_version, updated_at = excluded.updated_at",
            )
            .bind(name)
            .bind(&deploy.version)
            .bind(ms(now))
            .execute(&mut *tx)
            .await?;
            insert_outbox(&mut tx, OutboxKind::Workflow, &deploy.version, None).await?;
        }
        tx.commit().await?;
        Ok(created)
    }

    async fn current_version(&self, workflow: &str) -> Result<Arc<CompiledVersion>> {
        let record = self
            .get_workflow(workflow)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: format!("workflow `{workflow}` (deploy it with `ork workflow deploy FILE`)"),
            })?;
        Ok(record.version)
    }

    /// Inserts a run and its task runs, readying its roots, inside `tx`.
    async fn insert_run(
        &self,
        tx: &mut PgConnection,
        new: &NewRun,
        version: &CompiledVersion,
        now: DateTime<Utc>,
        changes: &mut Vec<Change>,
    ) -> Result<String> {
        let run_id = new_id();
        // Declared inputs get their defaults, and a mismatch names its field.
        let input = ork_domain::inputs::apply_inputs(&version.definition, &new.input)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        // Runs above the workflow's `concurrency` wait as `pending`; the
        // scheduler promotes them as running ones end. The workflow's row
        // lock makes the count and the insert one step across replicas.
        let waits = match version.definition.concurrency {
            Some(cap) => {
                sqlx::query("SELECT name FROM workflows WHERE name = $1 FOR UPDATE")
                    .bind(&new.workflow)
                    .fetch_optional(&mut *tx)
                    .await?;
                let active: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM runs WHERE workflow = $1 AND status IN ('running', 'pending')",
                )
                .bind(&new.workflow)
                .fetch_one(&mut *tx)
                .await?;
                active >= i64::from(cap)
            }
            None => false,
        };
        sqlx::query(
            "INSERT INTO runs (id, workflow, workflow_version, status, triggered_by, input, created_at, started_at, \
             owner, lease_expires) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&run_id)
        .bind(&new.workflow)
        .bind(&version.version)
        .bind(if waits { "pending" } else { "running" })
        .bind(new.triggered_by.as_str())
        .bind(json_text(&input))
        .bind(ms(now))
        .bind((!waits).then(|| ms(now)))
        .bind(&new.owner)
        .bind(ms(now) + self.lease_ms())
        .execute(&mut *tx)
        .await?;
        let rows: Vec<NewTaskRunRow<'_>> = version
            .definition
            .tasks
            .iter()
            .flat_map(initial_rows)
            .collect();
        insert_task_runs(tx, &run_id, &rows, now).await?;
        if !waits {
            changes.push(Change::RunStarted {
                run_id: run_id.clone(),
                workflow: new.workflow.clone(),
            });
            advance::evaluate_all(
                &mut Tx {
                    conn: tx,
                    outputs: self.outputs.get().cloned(),
                    changes,
                },
                version,
                &run_id,
                self.limits,
                now,
            )
            .await?;
        }
        insert_outbox(tx, OutboxKind::Run, &run_id, None).await?;
        Ok(run_id)
    }

    async fn create_run_once(
        &self,
        new: &NewRun,
        now: DateTime<Utc>,
    ) -> Result<(String, Vec<Change>)> {
        let version = self.current_version(&new.workflow).await?;
        let mut changes = Vec::new();
        let mut tx = self.pool.begin().await?;
        let run_id = self
            .insert_run(&mut tx, new, &version, now, &mut changes)
            .await?;
        tx.commit().await?;
        Ok((run_id, changes))
    }

    async fn fire_schedule_once(
        &self,
        workflow: &str,
        fire_time: DateTime<Utc>,
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<(String, Vec<Change>)>> {
        let version = self.current_version(workflow).await?;
        let mut tx = self.pool.begin().await?;
        // The unique (workflow, fire_time) key makes a fire happen once, however
        // many schedulers see it due: a concurrent twin insert waits for this
        // transaction and then does nothing.
        let claimed = sqlx::query(
            "INSERT INTO schedule_fires (workflow, fire_time, run_id) VALUES ($1, $2, '') \
             ON CONFLICT (workflow, fire_time) DO NOTHING",
        )
        .bind(workflow)
        .bind(ms(fire_time))
        .execute(&mut *tx)
        .await?;
        if claimed.rows_affected() == 0 {
            return Ok(None);
        }
        let new = NewRun {
            workflow: workflow.to_owned(),
            input: serde_json::json!({ "scheduled_for": fire_time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true) }),
            triggered_by: TriggerType::Schedule,
            owner: owner.to_owned(),
        };
        let mut changes = Vec::new();
        let run_id = self
            .insert_run(&mut tx, &new, &version, now, &mut changes)
            .await?;
        sqlx::query("UPDATE schedule_fires SET run_id = $1 WHERE workflow = $2 AND fire_time = $3")
            .bind(&run_id)
            .bind(workflow)
            .bind(ms(fire_time))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some((run_id, changes)))
    }

    async fn cancel_run_once(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<(Vec<ActiveAttempt>, Vec<Change>)> {
        let mut tx = self.pool.begin().await?;
        let run: Option<(String, String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT status, workflow, created_at, started_at FROM runs WHERE id = $1 FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let (status, workflow, created_at, started_at) = run.ok_or_else(|| Error::NotFound {
            what: format!("run {id}"),
        })?;
        if RunStatus::parse(&status).is_some_and(RunStatus::is_terminal) {
            return Err(Error::FailedPrecondition(format!(
                "run {id} already ended `{status}`; there is nothing to cancel"
            )));
        }
        // Locking every unfinished task run first waits out a claim in
        // flight, so an attempt it dispatches is seen (and cancelled) here.
        let rows = sqlx::query(&format!(
            "SELECT {CANCELLED_COLUMNS}, status, token, executor, executor_id FROM task_runs \
             WHERE run_id = $1 AND status IN ('pending', 'dispatched', 'running') ORDER BY id FOR UPDATE"
        ))
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        let mut active = Vec::new();
        let mut changes = Vec::new();
        for r in &rows {
            let status = task_status(&r.text("status")?)?;
            if ACTIVE.contains(&status) {
                changes.push(cancelled_attempt(r, id, &workflow, now)?);
                active.push(ActiveAttempt {
                    fence: current_fence(r)?,
                    executor: r.text("executor")?,
                    executor_id: r.opt_text("executor_id")?,
                });
            }
        }
        for a in &active {
            sqlx::query(
                "UPDATE attempts SET status = 'cancelled', error = 'cancelled', finished_at = $1 \
                 WHERE task_run_id = $2 AND attempt = $3",
            )
            .bind(ms(now))
            .bind(&a.fence.task_run_id)
            .bind(i64::from(a.fence.attempt))
            .execute(&mut *tx)
            .await?;
            insert_outbox(
                &mut tx,
                OutboxKind::Attempt,
                &a.fence.task_run_id,
                Some(a.fence.attempt),
            )
            .await?;
        }
        sqlx::query(
            "UPDATE task_runs SET status = 'cancelled', error = 'cancelled', finished_at = $1 \
             WHERE run_id = $2 AND status IN ('pending', 'dispatched', 'running')",
        )
        .bind(ms(now))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE runs SET status = 'cancelled', finished_at = $1 WHERE id = $2")
            .bind(ms(now))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        insert_outbox(&mut tx, OutboxKind::Run, id, None).await?;
        tx.commit().await?;
        changes.push(
            EndedRun {
                workflow,
                created_at,
                started_at,
            }
            .change(id, RunStatus::Cancelled, now),
        );
        Ok((active, changes))
    }

    async fn retry_run_once(
        &self,
        id: &str,
        task: Option<&str>,
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Change>> {
        let run = self.get_run(id).await?.ok_or_else(|| Error::NotFound {
            what: format!("run {id}"),
        })?;
        let version = self.compiled(&run.workflow_version).await?;
        let mut tx = self.pool.begin().await?;
        // Checked again under the run's lock: another replica may have
        // retried it in the meantime.
        let status: String = sqlx::query_scalar("SELECT status FROM runs WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: format!("run {id}"),
            })?;
        let status = RunStatus::parse(&status)
            .ok_or_else(|| Error::Corrupt(format!("run status `{status}`")))?;
        if !status.is_terminal() {
            return Err(Error::FailedPrecondition(format!(
                "run {id} is still `{status}`; wait for it to end or cancel it first"
            )));
        }
        if status == RunStatus::Success && task.is_none() {
            return Err(Error::FailedPrecondition(format!(
                "run {id} succeeded; name a task with --task to re-run it and what follows it"
            )));
        }
        let (names, only_unsuccessful): (BTreeSet<String>, bool) = match task {
            Some(t) => {
                if version.task(t).is_none() {
                    let known: Vec<&str> = version
                        .definition
                        .tasks
                        .iter()
                        .map(|t| t.name.as_str())
                        .collect();
                    return Err(Error::InvalidArgument(format!(
                        "workflow `{}` has no task `{t}`; its tasks are: {}",
                        run.workflow,
                        known.join(", ")
                    )));
                }
                let mut set = version.dag.downstream(t);
                set.insert(t.to_owned());
                (set, false)
            }
            None => {
                let names: Vec<String> = sqlx::query_scalar(
                    "SELECT DISTINCT task_name FROM task_runs WHERE run_id = $1 \
                     AND status IN ('failed', 'cancelled', 'skipped')",
                )
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
                (names.into_iter().collect(), true)
            }
        };
        for name in &names {
            let Some(def) = version.task(name) else {
                continue;
            };
            let dynamic = matches!(
                def.parallel,
                Some(Parallelism::CountRef(_) | Parallelism::ForEach(_))
            );
            let upstream_reruns = version.dag.upstream(name).iter().any(|u| names.contains(u));
            if dynamic && upstream_reruns {
                // Its items may change: expand again from scratch.
                sqlx::query("DELETE FROM task_runs WHERE run_id = $1 AND task_name = $2")
                    .bind(id)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                insert_task_runs(&mut tx, id, &initial_rows(def), now).await?;
                continue;
            }
            let filter = if only_unsuccessful {
                " AND status IN ('failed', 'cancelled', 'skipped')"
            } else {
                ""
            };
            sqlx::query(&format!(
                "UPDATE task_runs SET status = 'pending', attempt_base = attempt, lost_count = 0, token = NULL, \
                 input = NULL, output = NULL, error = NULL, ready_at = NULL, dispatched_at = NULL, \
                 started_at = NULL, finished_at = NULL, executor_id = NULL, heartbeat_at = NULL, deadline_at = NULL \
                 WHERE run_id = $1 AND task_name = $2{filter}"
            ))
            .bind(id)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "UPDATE runs SET status = 'running', finished_at = NULL, owner = $2, lease_expires = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(owner)
        .bind(ms(now) + self.lease_ms())
        .execute(&mut *tx)
        .await?;
        let mut changes = vec![Change::RunStarted {
            run_id: id.to_owned(),
            workflow: run.workflow.clone(),
        }];
        advance::evaluate_all(
            &mut Tx {
                conn: &mut tx,
                outputs: self.outputs.get().cloned(),
                changes: &mut changes,
            },
            &version,
            id,
            self.limits,
            now,
        )
        .await?;
        insert_outbox(&mut tx, OutboxKind::Run, id, None).await?;
        tx.commit().await?;
        Ok(changes)
    }

    async fn claim_ready_once(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        limit: u32,
        capacity: &Capacity,
    ) -> Result<Vec<Claim>> {
        let (handlers, free): (Vec<String>, Vec<i64>) = capacity
            .pool
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(h, n)| (h.clone(), i64::from(*n)))
            .unzip();
        let mut tx = self.pool.begin().await?;
        // Row locks cannot sit beside window functions in one SELECT, so the
        // capped candidates are ranked first and locked in a second step.
        // SKIP LOCKED: rows another replica is claiming are left to it.
        let rows = sqlx::query(
            "WITH owned AS ( \
                 SELECT id FROM runs WHERE owner = $3 AND lease_expires >= $1 \
                     AND status IN ('pending', 'running') \
             ), plain AS ( \
                 SELECT t.id, t.ready_at FROM task_runs t \
                 WHERE t.status = 'pending' AND t.ready_at IS NOT NULL AND t.ready_at <= $1 \
                     AND t.concurrency IS NULL AND t.executor <> 'workers' AND t.run_id IN (SELECT id FROM owned) \
                 ORDER BY t.ready_at, t.id LIMIT $2 \
                 FOR UPDATE OF t SKIP LOCKED \
             ), ranked AS ( \
                 SELECT id FROM ( \
                     SELECT r.id, r.concurrency, COALESCE(a.n, 0) AS active, \
                         ROW_NUMBER() OVER (PARTITION BY r.run_id, r.task_name \
                             ORDER BY r.ready_at, r.parallel_index, r.id) AS rn \
                     FROM task_runs r LEFT JOIN ( \
                         SELECT run_id, task_name, COUNT(*) AS n FROM task_runs \
                         WHERE status IN ('dispatched', 'running') AND concurrency IS NOT NULL \
                             AND run_id IN (SELECT id FROM owned) \
                         GROUP BY run_id, task_name) a ON a.run_id = r.run_id AND a.task_name = r.task_name \
                     WHERE r.status = 'pending' AND r.ready_at IS NOT NULL AND r.ready_at <= $1 \
                         AND r.concurrency IS NOT NULL AND r.executor <> 'workers' \
                         AND r.run_id IN (SELECT id FROM owned)) c \
                 WHERE rn + active <= concurrency \
             ), capped AS ( \
                 SELECT t.id, t.ready_at FROM task_runs t \
                 WHERE t.id IN (SELECT id FROM ranked) AND t.status = 'pending' \
                 ORDER BY t.ready_at, t.id LIMIT $2 \
                 FOR UPDATE OF t SKIP LOCKED \
             ), pooled_ranked AS ( \
                 SELECT r.id, r.handler, ROW_NUMBER() OVER (PARTITION BY r.handler \
                     ORDER BY r.ready_at, r.parallel_index, r.id) AS rn \
                 FROM task_runs r WHERE r.status = 'pending' AND r.ready_at IS NOT NULL AND r.ready_at <= $1 \
                     AND r.executor = 'workers' AND r.run_id IN (SELECT id FROM owned) \
             ), pooled AS ( \
                 SELECT t.id, t.ready_at FROM task_runs t \
                 WHERE t.id IN (SELECT p.id FROM pooled_ranked p \
                     JOIN unnest($4::text[], $5::bigint[]) AS c(handler, free) ON c.handler = p.handler \
                     WHERE p.rn <= c.free) AND t.status = 'pending' \
                 ORDER BY t.ready_at, t.id LIMIT $2 \
                 FOR UPDATE OF t SKIP LOCKED \
             ), launched AS ( \
                 SELECT id, ready_at FROM (SELECT id, ready_at FROM plain UNION ALL SELECT id, ready_at FROM capped) l \
                 ORDER BY ready_at, id LIMIT $6 \
             ), chosen AS ( \
                 SELECT id FROM (SELECT id, ready_at FROM launched UNION ALL SELECT id, ready_at FROM pooled) u \
                 ORDER BY ready_at, id LIMIT $2 \
             ) \
             UPDATE task_runs t SET status = 'dispatched', attempt = t.attempt + 1, \
                 token = replace(gen_random_uuid()::text, '-', ''), dispatched_at = $1, started_at = NULL, \
                 heartbeat_at = $1, deadline_at = $1 + t.timeout_seconds * 1000, executor_id = NULL \
             FROM chosen WHERE t.id = chosen.id \
             RETURNING t.id, t.attempt, t.token, t.run_id, t.task_name, t.executor, t.handler, t.timeout_seconds",
        )
        .bind(ms(now))
        .bind(i64::from(limit))
        .bind(owner)
        .bind(&handlers)
        .bind(&free)
        .bind(i64::from(capacity.launched))
        .fetch_all(&mut *tx)
        .await?;
        let mut claims = Vec::with_capacity(rows.len());
        for r in &rows {
            claims.push(Claim {
                fence: current_fence(r)?,
                run_id: r.text("run_id")?,
                task_name: r.text("task_name")?,
                executor: r.text("executor")?,
                handler: r.opt_text("handler")?,
                timeout_seconds: to_u32(r.int("timeout_seconds")?),
            });
        }
        claims.sort_by(|a, b| a.fence.task_run_id.cmp(&b.fence.task_run_id));
        for chunk in claims.chunks(INSERT_CHUNK) {
            let mut qb: QueryBuilder<'_, Postgres> = QueryBuilder::new(
                "INSERT INTO attempts (task_run_id, attempt, status, dispatched_at) ",
            );
            qb.push_values(chunk, |mut b, c| {
                b.push_bind(c.fence.task_run_id.as_str())
                    .push_bind(i64::from(c.fence.attempt))
                    .push_bind("dispatched")
                    .push_bind(ms(now));
            });
            qb.build().execute(&mut *tx).await?;
            let mut qb: QueryBuilder<'_, Postgres> =
                QueryBuilder::new("INSERT INTO outbox (kind, key, attempt, created_at) ");
            qb.push_values(chunk, |mut b, c| {
                b.push_bind("attempt")
                    .push_bind(c.fence.task_run_id.as_str())
                    .push_bind(i64::from(c.fence.attempt))
                    .push_bind(ms(now));
            });
            qb.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(claims)
    }

    async fn fail_attempt_once(
        &self,
        fence: &Fence,
        failure: &Failure,
        now: DateTime<Utc>,
    ) -> Result<Vec<Change>> {
        let mut tx = self.pool.begin().await?;
        lock_run_of(&mut tx, &fence.task_run_id).await?;
        let row = match check_fence(&mut tx, fence, &ACTIVE, RowLock::Update).await {
            Ok(row) => row,
            Err(e @ Error::Stale { .. }) => {
                return if already_settled(&mut tx, fence, TaskStatus::Failed).await? {
                    Ok(Vec::new())
                } else {
                    Err(e)
                };
            }
            Err(e) => return Err(e),
        };
        let version = self.compiled_in(&mut tx, &row.workflow_version).await?;
        let task = version.task(&row.task_name).ok_or_else(|| {
            Error::Corrupt(format!(
                "task {} missing from version {}",
                row.task_name, version.version
            ))
        })?;
        let lost_retry = failure.kind == FailureKind::Lost && row.lost_count < MAX_LOST_RETRIES;
        let counted_attempt = fence.attempt.saturating_sub(to_u32(row.attempt_base));
        let retry =
            lost_retry || decide::should_retry(task, counted_attempt, failure.non_retryable);
        let mut changes = vec![row.finished(
            fence,
            row.failure_outcome(failure.kind, now),
            Some(&failure.error),
            &failure.metrics,
            now,
        )];
        insert_metrics(&mut tx, fence, &failure.metrics).await?;
        sqlx::query(
            "UPDATE attempts SET status = 'failed', error = $1, finished_at = $2 WHERE task_run_id = $3 AND attempt = $4",
        )
        .bind(&failure.error)
        .bind(ms(now))
        .bind(&fence.task_run_id)
        .bind(i64::from(fence.attempt))
        .execute(&mut *tx)
        .await?;
        insert_outbox(
            &mut tx,
            OutboxKind::Attempt,
            &fence.task_run_id,
            Some(fence.attempt),
        )
        .await?;
        if retry {
            let delay = if lost_retry {
                Duration::ZERO
            } else {
                decide::retry_delay(task, counted_attempt, jitter_unit())
            };
            // A lost attempt keeps its place in the queue (its first ready
            // time); a failed one waits its delay behind newer work.
            let ready_at = now + chrono::Duration::from_std(delay).unwrap_or_default();
            sqlx::query(
                "UPDATE task_runs SET status = 'pending', error = $1, executor_id = NULL, \
                 ready_at = CASE WHEN $3 = 1 THEN LEAST(COALESCE(ready_at, $2), $2) ELSE $2 END, \
                 attempt_base = attempt_base + $3, lost_count = lost_count + $3 WHERE id = $4",
            )
            .bind(&failure.error)
            .bind(ms(ready_at))
            .bind(i64::from(lost_retry))
            .bind(&fence.task_run_id)
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query(
                "UPDATE task_runs SET status = 'failed', error = $1, finished_at = $2 WHERE id = $3",
            )
            .bind(&failure.error)
            .bind(ms(now))
            .bind(&fence.task_run_id)
            .execute(&mut *tx)
            .await?;
            advance::after_finish(
                &mut Tx {
                    conn: &mut tx,
                    outputs: self.outputs.get().cloned(),
                    changes: &mut changes,
                },
                &version,
                &row.run_id,
                vec![row.task_name.clone()],
                self.limits,
                now,
            )
            .await?;
        }
        notify_owner(&mut tx, &row.run_id).await?;
        tx.commit().await?;
        Ok(changes)
    }

    async fn fail_pending_once(
        &self,
        task_run_id: &str,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<(bool, Vec<Change>)> {
        let mut tx = self.pool.begin().await?;
        lock_run_of(&mut tx, task_run_id).await?;
        let row: Option<(String, String, String)> = sqlx::query_as(
            "SELECT t.run_id, t.task_name, r.workflow_version FROM task_runs t \
             JOIN runs r ON r.id = t.run_id WHERE t.id = $1 AND t.status = 'pending' FOR UPDATE OF t",
        )
        .bind(task_run_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((run_id, task_name, version)) = row else {
            return Ok((false, Vec::new()));
        };
        let version = self.compiled_in(&mut tx, &version).await?;
        let mut changes = Vec::new();
        let mut run_tx = Tx {
            conn: &mut tx,
            outputs: self.outputs.get().cloned(),
            changes: &mut changes,
        };
        run_tx
            .finish_unstarted(task_run_id, TaskStatus::Failed, None, Some(error), now)
            .await?;
        advance::after_finish(
            &mut run_tx,
            &version,
            &run_id,
            vec![task_name],
            self.limits,
            now,
        )
        .await?;
        insert_outbox(&mut tx, OutboxKind::Run, &run_id, None).await?;
        notify_owner(&mut tx, &run_id).await?;
        tx.commit().await?;
        Ok((true, changes))
    }

    async fn promote_one(
        &self,
        id: &str,
        workflow: &str,
        version: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<Change>>> {
        let version = self.compiled(version).await?;
        let cap = version.definition.concurrency.map_or(i64::MAX, i64::from);
        let mut tx = self.pool.begin().await?;
        // One transaction per run, under its workflow's lock (the lock
        // create_run takes too): the count and the start are one step.
        sqlx::query("SELECT name FROM workflows WHERE name = $1 FOR UPDATE")
            .bind(workflow)
            .fetch_optional(&mut *tx)
            .await?;
        let running: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM runs WHERE workflow = $1 AND status = 'running'",
        )
        .bind(workflow)
        .fetch_one(&mut *tx)
        .await?;
        if running >= cap {
            return Ok(None);
        }
        let done = sqlx::query(
            "UPDATE runs SET status = 'running', started_at = $1 WHERE id = $2 AND status = 'pending'",
        )
        .bind(ms(now))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        let mut changes = vec![Change::RunStarted {
            run_id: id.to_owned(),
            workflow: workflow.to_owned(),
        }];
        advance::evaluate_all(
            &mut Tx {
                conn: &mut tx,
                outputs: self.outputs.get().cloned(),
                changes: &mut changes,
            },
            &version,
            id,
            self.limits,
            now,
        )
        .await?;
        insert_outbox(&mut tx, OutboxKind::Run, id, None).await?;
        tx.commit().await?;
        Ok(Some(changes))
    }

    async fn start_attempt_once(&self, fence: &Fence, now: DateTime<Utc>) -> Result<Vec<Change>> {
        let mut tx = self.pool.begin().await?;
        let row = check_fence(&mut tx, fence, &ACTIVE, RowLock::Update).await?;
        let mut changes = Vec::new();
        if row.status == TaskStatus::Dispatched {
            changes.push(row.started(now));
            sqlx::query(
                "UPDATE task_runs SET status = 'running', started_at = $1, heartbeat_at = $1 WHERE id = $2",
            )
            .bind(ms(now))
            .bind(&fence.task_run_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE attempts SET status = 'running', started_at = $1 WHERE task_run_id = $2 AND attempt = $3",
            )
            .bind(ms(now))
            .bind(&fence.task_run_id)
            .bind(i64::from(fence.attempt))
            .execute(&mut *tx)
            .await?;
            insert_outbox(
                &mut tx,
                OutboxKind::Attempt,
                &fence.task_run_id,
                Some(fence.attempt),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(changes)
    }

    async fn complete_attempt_once(
        &self,
        fence: &Fence,
        output: &Value,
        metrics: &[TaskMetric],
        now: DateTime<Utc>,
    ) -> Result<Vec<Change>> {
        let mut tx = self.pool.begin().await?;
        lock_run_of(&mut tx, &fence.task_run_id).await?;
        let row = match check_fence(&mut tx, fence, &ACTIVE, RowLock::Update).await {
            Ok(row) => row,
            Err(e @ Error::Stale { .. }) => {
                return if already_settled(&mut tx, fence, TaskStatus::Success).await? {
                    Ok(Vec::new())
                } else {
                    Err(e)
                };
            }
            Err(e) => return Err(e),
        };
        let version = self.compiled_in(&mut tx, &row.workflow_version).await?;
        // A marker was checked before its content was uploaded.
        if let Some(task) = version.task(&row.task_name)
            && output_ref(output).is_none()
        {
            ork_domain::types::validate_output(task, &version.definition, output)
                .map_err(Error::InvalidOutput)?;
        }
        let mut changes = Vec::with_capacity(2);
        if row.status == TaskStatus::Dispatched {
            changes.push(row.started(now));
        }
        changes.push(row.finished(fence, AttemptOutcome::Success, None, metrics, now));
        insert_metrics(&mut tx, fence, metrics).await?;
        sqlx::query(
            "UPDATE task_runs SET status = 'success', output = $1, error = NULL, finished_at = $2, \
             started_at = COALESCE(started_at, $2) WHERE id = $3",
        )
        .bind(json_text(output))
        .bind(ms(now))
        .bind(&fence.task_run_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE attempts SET status = 'success', finished_at = $1, started_at = COALESCE(started_at, $1) \
             WHERE task_run_id = $2 AND attempt = $3",
        )
        .bind(ms(now))
        .bind(&fence.task_run_id)
        .bind(i64::from(fence.attempt))
        .execute(&mut *tx)
        .await?;
        insert_outbox(
            &mut tx,
            OutboxKind::Attempt,
            &fence.task_run_id,
            Some(fence.attempt),
        )
        .await?;
        advance::after_finish(
            &mut Tx {
                conn: &mut tx,
                outputs: self.outputs.get().cloned(),
                changes: &mut changes,
            },
            &version,
            &row.run_id,
            vec![row.task_name.clone()],
            self.limits,
            now,
        )
        .await?;
        notify_owner(&mut tx, &row.run_id).await?;
        tx.commit().await?;
        Ok(changes)
    }
}

// ---------- the store ----------

#[async_trait]
impl StateStore for PostgresStore {
    fn set_output_store(&self, outputs: Arc<dyn OutputStore>) {
        let _ = self.outputs.set(outputs);
    }

    fn set_observer(&self, observer: Arc<dyn CommitObserver>) {
        self.observer.set(observer);
    }

    async fn deploy_workflow(
        &self,
        deploy: NewWorkflowVersion,
        now: DateTime<Utc>,
    ) -> Result<(WorkflowRecord, bool)> {
        let name = deploy.definition.name.clone();
        let definition = serde_json::to_string(&deploy.definition)
            .map_err(|e| Error::Corrupt(format!("definition: {e}")))?;
        let created = retrying(|| self.deploy_once(&deploy, &name, &definition, now)).await?;
        let record = self
            .get_workflow(&name)
            .await?
            .ok_or_else(|| Error::Corrupt(format!("workflow {name} vanished after deploy")))?;
        Ok((record, created))
    }

    async fn get_workflow(&self, name: &str) -> Result<Option<WorkflowRecord>> {
        let row = sqlx::query("SELECT * FROM workflows WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => Ok(Some(self.workflow_record(&row).await?)),
            None => Ok(None),
        }
    }

    async fn list_workflows(&self) -> Result<Vec<WorkflowRecord>> {
        let rows = sqlx::query("SELECT * FROM workflows ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(self.workflow_record(row).await?);
        }
        Ok(out)
    }

    async fn delete_workflow(&self, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM workflows WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn get_version(&self, version: &str) -> Result<Option<Arc<CompiledVersion>>> {
        if let Some(found) = self.cached_version(version) {
            return Ok(Some(found));
        }
        let mut conn = self.pool.acquire().await?;
        self.load_version(&mut conn, version).await
    }

    async fn get_version_file(&self, version: &str, path: &str) -> Result<Option<Vec<u8>>> {
        Ok(sqlx::query_scalar(
            "SELECT f.content FROM workflow_files w JOIN files f ON f.hash = w.hash \
             WHERE w.version = $1 AND w.path = $2",
        )
        .bind(version)
        .bind(path)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn create_run(&self, new: NewRun, now: DateTime<Utc>) -> Result<RunRecord> {
        let (run_id, changes) = retrying(|| self.create_run_once(&new, now)).await?;
        self.observer.committed(&changes);
        self.get_run(&run_id)
            .await?
            .ok_or_else(|| Error::Corrupt(format!("run {run_id} vanished after insert")))
    }

    async fn scheduled_workflows(&self) -> Result<Vec<(WorkflowRecord, Option<DateTime<Utc>>)>> {
        let rows = sqlx::query(
            "SELECT w.*, (SELECT MAX(fire_time) FROM schedule_fires f WHERE f.workflow = w.name) AS last_fire \
             FROM workflows w ORDER BY w.name",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for row in &rows {
            let record = self.workflow_record(row).await?;
            if record.version.definition.schedule.is_some() {
                out.push((record, opt_ms(row.opt_int("last_fire")?)));
            }
        }
        Ok(out)
    }

    async fn fire_schedule(
        &self,
        workflow: &str,
        fire_time: DateTime<Utc>,
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<RunRecord>> {
        match retrying(|| self.fire_schedule_once(workflow, fire_time, owner, now)).await? {
            Some((run_id, changes)) => {
                self.observer.committed(&changes);
                self.get_run(&run_id).await
            }
            None => Ok(None),
        }
    }

    async fn get_run(&self, id: &str) -> Result<Option<RunRecord>> {
        let row = sqlx::query("SELECT * FROM runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(run_record).transpose()
    }

    async fn list_runs(&self, workflow: Option<&str>, limit: u32) -> Result<Vec<RunRecord>> {
        let limit = i64::from(if limit == 0 { 100 } else { limit });
        let rows = match workflow {
            Some(w) => sqlx::query(
                "SELECT * FROM runs WHERE workflow = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
            )
            .bind(w)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?,
            None => {
                sqlx::query("SELECT * FROM runs ORDER BY created_at DESC, id DESC LIMIT $1")
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(run_record).collect()
    }

    async fn list_task_runs(&self, run_id: &str) -> Result<Vec<TaskRunRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {TASK_RUN_COLUMNS} FROM task_runs WHERE run_id = $1 ORDER BY task_name, parallel_index"
        ))
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(task_run_record).collect()
    }

    async fn get_task_run(&self, id: &str) -> Result<Option<TaskRunRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {TASK_RUN_COLUMNS} FROM task_runs WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(task_run_record).transpose()
    }

    async fn list_attempts(&self, task_run_id: &str) -> Result<Vec<AttemptRecord>> {
        let rows = sqlx::query("SELECT * FROM attempts WHERE task_run_id = $1 ORDER BY attempt")
            .bind(task_run_id)
            .fetch_all(&self.pool)
            .await?;
        let mut attempts = rows
            .iter()
            .map(attempt_record)
            .collect::<Result<Vec<_>>>()?;
        let metrics: Vec<MetricRow> = sqlx::query_as(
            "SELECT task_run_id, attempt, name, value FROM attempt_metrics WHERE task_run_id = $1",
        )
        .bind(task_run_id)
        .fetch_all(&self.pool)
        .await?;
        attach_metrics(&mut attempts, metrics);
        Ok(attempts)
    }

    async fn list_run_attempts(&self, run_id: &str) -> Result<Vec<AttemptRecord>> {
        let rows = sqlx::query(
            "SELECT a.* FROM attempts a JOIN task_runs t ON t.id = a.task_run_id \
             WHERE t.run_id = $1 ORDER BY a.task_run_id, a.attempt",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        let mut attempts = rows
            .iter()
            .map(attempt_record)
            .collect::<Result<Vec<_>>>()?;
        let metrics: Vec<MetricRow> = sqlx::query_as(
            "SELECT m.task_run_id, m.attempt, m.name, m.value FROM attempt_metrics m \
             JOIN task_runs t ON t.id = m.task_run_id WHERE t.run_id = $1",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        attach_metrics(&mut attempts, metrics);
        Ok(attempts)
    }

    async fn cancel_run(&self, id: &str, now: DateTime<Utc>) -> Result<Vec<ActiveAttempt>> {
        let (active, changes) = retrying(|| self.cancel_run_once(id, now)).await?;
        self.observer.committed(&changes);
        Ok(active)
    }

    async fn retry_run(
        &self,
        id: &str,
        task: Option<&str>,
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let changes = retrying(|| self.retry_run_once(id, task, owner, now)).await?;
        self.observer.committed(&changes);
        Ok(())
    }

    async fn get_logs(&self, query: &LogQuery) -> Result<Vec<LogRecord>> {
        let mut qb: QueryBuilder<'_, Postgres> = QueryBuilder::new(
            "SELECT l.id, l.task_run_id, t.task_name, t.parallel_index, l.attempt, l.stream, l.line, l.time \
             FROM task_logs l JOIN task_runs t ON t.id = l.task_run_id WHERE l.run_id = ",
        );
        qb.push_bind(query.run_id.as_str())
            .push(" AND l.id > ")
            .push_bind(query.after_id);
        if let Some(task) = &query.task {
            qb.push(" AND t.task_name = ").push_bind(task.as_str());
        }
        if let Some((task_run_id, attempt)) = &query.task_run_attempt {
            qb.push(" AND l.task_run_id = ")
                .push_bind(task_run_id.as_str())
                .push(" AND l.attempt = ")
                .push_bind(i64::from(*attempt));
        }
        let limit = if query.limit == 0 { 1000 } else { query.limit };
        qb.push(" ORDER BY l.id LIMIT ").push_bind(i64::from(limit));
        let rows = qb.build().fetch_all(&self.pool).await?;
        rows.iter().map(log_record).collect()
    }

    async fn acquire_runs(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<String>> {
        // Unowned (never owned, or released) and expired runs; runs a report
        // is advancing right now are left for the next round.
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE runs SET owner = $1, lease_expires = $2 WHERE id IN ( \
                 SELECT id FROM runs WHERE status IN ('pending', 'running') \
                 AND (owner IS NULL OR lease_expires IS NULL OR lease_expires < $3) \
                 ORDER BY created_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) \
             RETURNING id",
        )
        .bind(owner)
        .bind(ms(now) + self.lease_ms())
        .bind(ms(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }

    async fn renew_leases(&self, owner: &str, now: DateTime<Utc>) -> Result<u64> {
        let done = retrying(|| async move {
            let done = sqlx::query(
                "UPDATE runs SET lease_expires = $2 WHERE owner = $1 AND status IN ('pending', 'running') \
                 AND lease_expires >= $3",
            )
            .bind(owner)
            .bind(ms(now) + self.lease_ms())
            .bind(ms(now))
            .execute(&self.pool)
            .await?;
            Ok(done)
        })
        .await?;
        Ok(done.rows_affected())
    }

    async fn release_leases(&self, owner: &str) -> Result<()> {
        retrying(|| async move {
            sqlx::query("UPDATE runs SET owner = NULL, lease_expires = NULL WHERE owner = $1")
                .bind(owner)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
        .await?;
        Ok(())
    }

    async fn claim_ready(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        limit: u32,
        capacity: &Capacity,
    ) -> Result<Vec<Claim>> {
        retrying(|| self.claim_ready_once(owner, now, limit, capacity)).await
    }

    async fn wakeups(&self, owner: &str) -> Result<Option<BoxStream<'static, ()>>> {
        Ok(Some(self.listen_wakeups(owner).await?))
    }

    async fn release_claim(&self, fence: &Fence) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE task_runs SET status = 'pending', attempt = attempt - 1, token = NULL, dispatched_at = NULL, \
             heartbeat_at = NULL, deadline_at = NULL WHERE id = $1 AND attempt = $2 AND token = $3 AND status = 'dispatched'",
        )
        .bind(&fence.task_run_id)
        .bind(i64::from(fence.attempt))
        .bind(&fence.token)
        .execute(&mut *tx)
        .await?;
        let released = done.rows_affected() == 1;
        if released {
            sqlx::query("DELETE FROM attempts WHERE task_run_id = $1 AND attempt = $2")
                .bind(&fence.task_run_id)
                .bind(i64::from(fence.attempt))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(released)
    }

    async fn set_executor_id(&self, fence: &Fence, executor_id: &str) -> Result<()> {
        sqlx::query(
            "UPDATE task_runs SET executor_id = $1 WHERE id = $2 AND attempt = $3 AND token = $4",
        )
        .bind(executor_id)
        .bind(&fence.task_run_id)
        .bind(i64::from(fence.attempt))
        .bind(&fence.token)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn fail_attempt(
        &self,
        fence: &Fence,
        failure: &Failure,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let changes = retrying(|| self.fail_attempt_once(fence, failure, now)).await?;
        self.observer.committed(&changes);
        Ok(())
    }

    async fn expired_attempts(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        heartbeat_timeout: Duration,
    ) -> Result<Vec<ExpiredAttempt>> {
        let silent_since = ms(now).saturating_sub(duration_ms(heartbeat_timeout));
        let rows = sqlx::query(
            "SELECT id, attempt, token, executor, executor_id, timeout_seconds, deadline_at FROM task_runs \
             WHERE status IN ('dispatched', 'running') AND (deadline_at <= $1 OR heartbeat_at <= $2) \
             AND run_id IN (SELECT id FROM runs WHERE owner = $3 AND lease_expires >= $1)",
        )
        .bind(ms(now))
        .bind(silent_since)
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let deadline = r.opt_int("deadline_at")?;
                Ok(ExpiredAttempt {
                    fence: current_fence(r)?,
                    executor: r.text("executor")?,
                    executor_id: r.opt_text("executor_id")?,
                    kind: if deadline.is_some_and(|d| d <= ms(now)) {
                        FailureKind::Timeout
                    } else {
                        FailureKind::Lost
                    },
                    timeout_seconds: to_u32(r.int("timeout_seconds")?),
                })
            })
            .collect()
    }

    async fn recover(&self, owner: &str, now: DateTime<Utc>) -> Result<u64> {
        let done = retrying(|| async move {
            let done = sqlx::query(
                "UPDATE task_runs SET heartbeat_at = $1 WHERE status IN ('dispatched', 'running') \
                 AND run_id IN (SELECT id FROM runs WHERE owner = $2)",
            )
            .bind(ms(now))
            .bind(owner)
            .execute(&self.pool)
            .await?;
            Ok(done)
        })
        .await?;
        Ok(done.rows_affected())
    }

    async fn promote_pending_runs(&self, owner: &str, now: DateTime<Utc>) -> Result<u32> {
        let waiting: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT id, workflow, workflow_version FROM runs WHERE status = 'pending' AND owner = $1 \
             ORDER BY created_at, id",
        )
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        let mut promoted = 0;
        for (id, workflow, version) in waiting {
            if let Some(changes) =
                retrying(|| self.promote_one(&id, &workflow, &version, now)).await?
            {
                self.observer.committed(&changes);
                promoted += 1;
            }
        }
        Ok(promoted)
    }

    async fn next_ready_at(&self) -> Result<Option<DateTime<Utc>>> {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(ready_at) FROM task_runs WHERE status = 'pending' AND ready_at IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(opt_ms(next))
    }

    async fn waiting_pool_tasks(
        &self,
        owner: &str,
        ready_before: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(String, String)>> {
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT id, handler FROM task_runs WHERE status = 'pending' AND executor = 'workers' \
             AND ready_at IS NOT NULL AND ready_at <= $1 \
             AND run_id IN (SELECT id FROM runs WHERE owner = $2 AND lease_expires >= $3) \
             ORDER BY ready_at LIMIT $4",
        )
        .bind(ms(ready_before))
        .bind(owner)
        .bind(ms(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, handler)| (id, handler.unwrap_or_default()))
            .collect())
    }

    async fn fail_pending(
        &self,
        task_run_id: &str,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let (failed, changes) =
            retrying(|| self.fail_pending_once(task_run_id, error, now)).await?;
        self.observer.committed(&changes);
        Ok(failed)
    }

    async fn attempt_spec(&self, fence: &Fence) -> Result<AttemptSpec> {
        let mut conn = self.pool.acquire().await?;
        let row = check_fence(&mut conn, fence, &ACTIVE, RowLock::None).await?;
        let version = self.compiled_in(&mut conn, &row.workflow_version).await?;
        let task = version.task(&row.task_name).ok_or_else(|| {
            Error::Corrupt(format!(
                "task {} missing from version {}",
                row.task_name, version.version
            ))
        })?;
        let detail = sqlx::query(
            "SELECT t.input, t.parallel_index, t.parallel_count, t.deadline_at, r.workflow \
             FROM task_runs t JOIN runs r ON r.id = t.run_id WHERE t.id = $1",
        )
        .bind(&fence.task_run_id)
        .fetch_one(&mut *conn)
        .await?;
        drop(conn);
        let mut file_content = Vec::new();
        if let Some(file) = &task.file {
            file_content = self
                .get_version_file(&version.version, file)
                .await?
                .unwrap_or_default();
        }
        let mut config_file_content = Vec::new();
        if let Some(file) = &task.config_file {
            config_file_content = self
                .get_version_file(&version.version, file)
                .await?
                .unwrap_or_default();
        }
        Ok(AttemptSpec {
            run_id: row.run_id,
            workflow: detail.text("workflow")?,
            task_name: row.task_name.clone(),
            task_run_id: fence.task_run_id.clone(),
            attempt: fence.attempt,
            parallel_index: opt_u32(detail.opt_int("parallel_index")?),
            parallel_count: opt_u32(detail.opt_int("parallel_count")?),
            input: opt_json(detail.opt_text("input")?)?.unwrap_or(Value::Null),
            env: task.env.clone(),
            timeout_seconds: task.timeout_seconds,
            deadline: opt_ms(detail.opt_int("deadline_at")?),
            file: task.file.clone(),
            file_content,
            config_file: task.config_file.clone(),
            config_file_content,
            handler: task.handler.clone(),
            command: task.command.clone(),
            python: task.python.clone(),
        })
    }

    async fn start_attempt(&self, fence: &Fence, now: DateTime<Utc>) -> Result<()> {
        let changes = retrying(|| self.start_attempt_once(fence, now)).await?;
        self.observer.committed(&changes);
        Ok(())
    }

    async fn heartbeat(&self, fence: &Fence, now: DateTime<Utc>) -> Result<bool> {
        // The common case in one statement; the read below only explains a miss.
        let done = sqlx::query(
            "UPDATE task_runs SET heartbeat_at = $1 WHERE id = $2 AND attempt = $3 AND token = $4 \
             AND status IN ('dispatched', 'running')",
        )
        .bind(ms(now))
        .bind(&fence.task_run_id)
        .bind(i64::from(fence.attempt))
        .bind(&fence.token)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(false);
        }
        let mut conn = self.pool.acquire().await?;
        let allowed = [
            TaskStatus::Dispatched,
            TaskStatus::Running,
            TaskStatus::Cancelled,
        ];
        let row = check_fence(&mut conn, fence, &allowed, RowLock::None).await?;
        Ok(row.status == TaskStatus::Cancelled)
    }

    async fn append_logs(&self, fence: &Fence, lines: &[NewLogLine]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        let allowed = [
            TaskStatus::Dispatched,
            TaskStatus::Running,
            TaskStatus::Cancelled,
        ];
        let row = check_fence(&mut tx, fence, &allowed, RowLock::Share).await?;
        for chunk in lines.chunks(INSERT_CHUNK) {
            let mut qb: QueryBuilder<'_, Postgres> = QueryBuilder::new(
                "INSERT INTO task_logs (run_id, task_run_id, attempt, stream, line, time) ",
            );
            qb.push_values(chunk, |mut b, l| {
                b.push_bind(row.run_id.as_str())
                    .push_bind(fence.task_run_id.as_str())
                    .push_bind(i64::from(fence.attempt))
                    .push_bind(l.stream.as_str())
                    .push_bind(l.line.as_str())
                    .push_bind(ms(l.time));
            });
            qb.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn complete_attempt(
        &self,
        fence: &Fence,
        output: Value,
        metrics: &[TaskMetric],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let changes = retrying(|| self.complete_attempt_once(fence, &output, metrics, now)).await?;
        self.observer.committed(&changes);
        Ok(())
    }

    async fn queue_stats(&self, owner: &str, now: DateTime<Utc>) -> Result<QueueStats> {
        let (upstream, delayed, ready, dispatched, running): (i64, i64, i64, i64, i64) =
            sqlx::query_as(
                "SELECT \
                 COUNT(*) FILTER (WHERE status = 'pending' AND ready_at IS NULL), \
                 COUNT(*) FILTER (WHERE status = 'pending' AND ready_at > $1), \
                 COUNT(*) FILTER (WHERE status = 'pending' AND ready_at <= $1), \
                 COUNT(*) FILTER (WHERE status = 'dispatched'), \
                 COUNT(*) FILTER (WHERE status = 'running') \
                 FROM task_runs WHERE status IN ('pending', 'dispatched', 'running')",
            )
            .bind(ms(now))
            .fetch_one(&self.pool)
            .await?;
        let (runs_pending, runs_running, leased): (i64, i64, i64) = sqlx::query_as(
            "SELECT COUNT(*) FILTER (WHERE status = 'pending'), \
             COUNT(*) FILTER (WHERE status = 'running'), \
             COUNT(*) FILTER (WHERE owner = $1 AND lease_expires >= $2) \
             FROM runs WHERE status IN ('pending', 'running')",
        )
        .bind(owner)
        .bind(ms(now))
        .fetch_one(&self.pool)
        .await?;
        let outbox: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
            .fetch_one(&self.pool)
            .await?;
        Ok(QueueStats {
            waiting_upstream: count(upstream),
            retry_delay: count(delayed),
            ready: count(ready),
            dispatched: count(dispatched),
            running: count(running),
            runs_pending: count(runs_pending),
            runs_running: count(runs_running),
            outbox: count(outbox),
            leased_runs: count(leased),
        })
    }

    async fn outbox_batch(&self, limit: u32) -> Result<Vec<OutboxEntry>> {
        let rows = sqlx::query("SELECT id, kind, key, attempt FROM outbox ORDER BY id LIMIT $1")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(outbox_entry).collect()
    }

    async fn outbox_ack(&self, ids: &[i64]) -> Result<()> {
        sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
            .bind(ids)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://ork:s3cret@db:5432/ork"),
            "postgres://ork:***@db:5432/ork"
        );
        assert_eq!(redact("postgres://ork@db/ork"), "postgres://ork@db/ork");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_clear_error_after_the_wait() {
        // Port 1 on loopback: nothing listens, connections are refused at once.
        let url = "postgres://ork:s3cret@127.0.0.1:1/ork";
        let started = Instant::now();
        let err = PostgresStore::open_with_patience(url, Limits::default(), Duration::from_secs(1))
            .await
            .err()
            .expect("no server there");
        let message = err.to_string();
        assert!(matches!(err, Error::Database(_)), "{message}");
        assert!(
            message.contains("postgres://ork:***@127.0.0.1:1/ork"),
            "{message}"
        );
        assert!(!message.contains("s3cret"), "{message}");
        assert!(
            started.elapsed() >= Duration::from_millis(500),
            "it retried for a while"
        );
    }
}
