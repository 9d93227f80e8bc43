//! The embedded default store: SQLite in WAL mode through sqlx.
//!
//! SQLite has one writer, so writes go through a pool of one connection (no
//! lock-upgrade deadlocks, no SQLITE_BUSY between our own transactions) and
//! reads through a separate pool.

use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ork_domain::dag::Dag;
use ork_domain::decide::{self, DepSummary, RunTally};
use ork_domain::{
    Parallelism, RunStatus, TaskDefinition, TaskStatus, TriggerType, WorkflowDefinition,
};
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use super::advance::{self, NewInstance, OutputRow, RunTx, UnreadyRow};
use super::observe::ObserverSlot;
use super::rows::*;
use super::*;

/// Unfinished task runs by where they stand (`?1` is now, in ms).
const QUEUE_STATS_SQLITE: &str = "SELECT \
    COALESCE(SUM(CASE WHEN status = 'pending' AND ready_at IS NULL THEN 1 ELSE 0 END), 0), \
    COALESCE(SUM(CASE WHEN status = 'pending' AND ready_at > ?1 THEN 1 ELSE 0 END), 0), \
    COALESCE(SUM(CASE WHEN status = 'pending' AND ready_at <= ?1 THEN 1 ELSE 0 END), 0), \
    COALESCE(SUM(CASE WHEN status = 'dispatched' THEN 1 ELSE 0 END), 0), \
    COALESCE(SUM(CASE WHEN status = 'running' THEN 1 ELSE 0 END), 0) \
    FROM task_runs WHERE status IN ('pending', 'dispatched', 'running')";

/// Rows per multi-row INSERT, well under SQLite's bound-parameter limit.
const INSERT_CHUNK: usize = 500;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// SQLite implementation of [`StateStore`].
pub struct SqliteStore {
    write: SqlitePool,
    read: SqlitePool,
    versions: Mutex<HashMap<String, Arc<CompiledVersion>>>,
    limits: Limits,
    /// Where large outputs live; set once by the server.
    outputs: std::sync::OnceLock<Arc<dyn OutputStore>>,
    /// Heartbeats not written yet: task run id → (attempt, time in ms).
    /// A beat is checked against the database (fence, cancellation) on the
    /// read pool, but only remembered here; [`SqliteStore::flush_beats`]
    /// writes them all in one transaction before expiries are looked for, so
    /// the single writer is not spent on one commit per beat.
    beats: Mutex<HashMap<String, (u32, i64)>>,
    /// Told the changes of each committed transaction.
    observer: ObserverSlot,
}

impl SqliteStore {
    /// Opens (creating when missing) and migrates the database at `url`.
    pub async fn open(url: &str, limits: Limits) -> Result<Self> {
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let path = url
            .strip_prefix("sqlite://")
            .map(|p| p.split('?').next().unwrap_or(p));
        if !in_memory
            && let Some(path) = path
            && let Some(parent) = std::path::Path::new(path).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                Error::InvalidArgument(format!("cannot create the folder of {path}: {e}"))
            })?;
        }
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .pragma("temp_store", "memory");
        // An in-memory database exists once per connection: share one.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&write).await?;
        let read = if in_memory {
            write.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(options.read_only(true))
                .await?
        };
        Ok(Self {
            write,
            read,
            versions: Mutex::new(HashMap::new()),
            limits,
            outputs: std::sync::OnceLock::new(),
            beats: Mutex::new(HashMap::new()),
            observer: ObserverSlot::default(),
        })
    }

    /// The token store in this database, on the same writer and read pools.
    pub fn tokens(&self) -> super::tokens::SqliteTokens {
        super::tokens::SqliteTokens::new(self.write.clone(), self.read.clone())
    }

    /// Writes the buffered heartbeats. A beat only moves `heartbeat_at`
    /// forward, and only for the attempt it was sent for while it is active.
    async fn flush_beats(&self) -> Result<()> {
        let beats = std::mem::take(&mut *self.beats.lock().unwrap_or_else(|e| e.into_inner()));
        if beats.is_empty() {
            return Ok(());
        }
        let mut tx = self.write.begin().await?;
        for (id, (attempt, at)) in &beats {
            sqlx::query(
                "UPDATE task_runs SET heartbeat_at = MAX(COALESCE(heartbeat_at, 0), ?1) \
                 WHERE id = ?2 AND attempt = ?3 AND status IN ('dispatched', 'running')",
            )
            .bind(at)
            .bind(id)
            .bind(i64::from(*attempt))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.limits.lease.as_millis()).unwrap_or(i64::MAX / 2)
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
        tx: &mut SqliteConnection,
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
        // scheduler promotes them as running ones end.
        let waits = match version.definition.concurrency {
            Some(cap) => {
                let active: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM runs WHERE workflow = ?1 AND status IN ('running', 'pending')",
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
             owner, lease_expires) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
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

    async fn compiled(&self, version: &str) -> Result<Arc<CompiledVersion>> {
        self.get_version(version)
            .await?
            .ok_or_else(|| Error::Corrupt(format!("workflow version {version} is missing")))
    }

    async fn workflow_record(&self, row: &SqliteRow) -> Result<WorkflowRecord> {
        let version: String = row.try_get("current_version")?;
        Ok(WorkflowRecord {
            name: row.try_get("name")?,
            version: self.compiled(&version).await?,
            created_at: from_ms(row.try_get("created_at")?),
            updated_at: from_ms(row.try_get("updated_at")?),
        })
    }
}

/// Loads the task run named by `fence` and rejects the call unless the fence
/// is the current attempt and its status is one of `allowed`.
async fn check_fence(
    conn: &mut SqliteConnection,
    fence: &Fence,
    allowed: &[TaskStatus],
) -> Result<FencedRow> {
    let row = sqlx::query(&format!(
        "SELECT {FENCED_COLUMNS} FROM task_runs t JOIN runs r ON r.id = t.run_id WHERE t.id = ?1"
    ))
    .bind(&fence.task_run_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| Error::NotFound {
        what: format!("task run {}", fence.task_run_id),
    })?;
    let status = task_status(row.try_get::<&str, _>("status")?)?;
    let attempt = to_u32(row.try_get("attempt")?);
    let token: Option<String> = row.try_get("token")?;
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
async fn already_settled(
    conn: &mut SqliteConnection,
    fence: &Fence,
    outcome: TaskStatus,
) -> Result<bool> {
    let row = sqlx::query(
        "SELECT t.attempt, t.token, a.status FROM task_runs t \
         JOIN attempts a ON a.task_run_id = t.id AND a.attempt = ?2 WHERE t.id = ?1",
    )
    .bind(&fence.task_run_id)
    .bind(i64::from(fence.attempt))
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(false) };
    let same_attempt = to_u32(row.try_get("attempt")?) == fence.attempt
        && row.try_get::<Option<String>, _>("token")?.as_deref() == Some(fence.token.as_str());
    Ok(same_attempt && row.try_get::<&str, _>("status")? == outcome.as_str())
}

async fn insert_outbox(
    conn: &mut SqliteConnection,
    kind: OutboxKind,
    key: &str,
    attempt: Option<u32>,
) -> Result<()> {
    sqlx::query("INSERT INTO outbox (kind, key, attempt, created_at) VALUES (?1, ?2, ?3, ?4)")
        .bind(kind.as_str())
        .bind(key)
        .bind(attempt.map(i64::from))
        .bind(ms(Utc::now()))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Stores the metrics an attempt recorded (last value per name wins).
async fn insert_metrics(
    conn: &mut SqliteConnection,
    fence: &Fence,
    metrics: &[TaskMetric],
) -> Result<()> {
    if metrics.is_empty() {
        return Ok(());
    }
    let mut qb: QueryBuilder<'_, Sqlite> =
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
    conn: &mut SqliteConnection,
    run_id: &str,
    rows: &[NewTaskRunRow<'_>],
    now: DateTime<Utc>,
) -> Result<()> {
    for chunk in rows.chunks(INSERT_CHUNK) {
        let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new(
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
    conn: &'c mut SqliteConnection,
    outputs: Option<Arc<dyn OutputStore>>,
    changes: &'c mut Vec<Change>,
}

fn push_in_list<'a>(qb: &mut QueryBuilder<'a, Sqlite>, values: &'a [String]) {
    qb.push(" IN (");
    let mut sep = qb.separated(", ");
    for v in values {
        sep.push_bind(v.as_str());
    }
    sep.push_unseparated(")");
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
        let text: String = sqlx::query_scalar("SELECT input FROM runs WHERE id = ?1")
            .bind(run_id)
            .fetch_one(&mut *self.conn)
            .await?;
        parse_json(&text)
    }

    async fn dep_summaries(&mut self, run_id: &str, deps: &[String]) -> Result<Vec<DepSummary>> {
        if deps.is_empty() {
            return Ok(Vec::new());
        }
        let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new(
            "SELECT task_name, COUNT(*) AS total, \
             SUM(CASE WHEN status = 'success' THEN 1 ELSE 0 END) AS succeeded, \
             SUM(CASE WHEN status IN ('failed', 'skipped', 'cancelled') THEN 1 ELSE 0 END) AS unsuccessful \
             FROM task_runs WHERE run_id = ",
        );
        qb.push_bind(run_id).push(" AND task_name");
        push_in_list(&mut qb, deps);
        qb.push(" GROUP BY task_name");
        let rows = qb.build().fetch_all(&mut *self.conn).await?;
        let mut found: HashMap<String, DepSummary> = HashMap::new();
        for row in rows {
            let task: String = row.try_get("task_name")?;
            found.insert(
                task.clone(),
                DepSummary {
                    task,
                    total: to_u32(row.try_get("total")?),
                    succeeded: to_u32(row.try_get("succeeded")?),
                    unsuccessful: to_u32(row.try_get("unsuccessful")?),
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
             WHERE run_id = ?1 AND task_name = ?2 AND status = 'pending' AND ready_at IS NULL \
             ORDER BY parallel_index",
        )
        .bind(run_id)
        .bind(task)
        .fetch_all(&mut *self.conn)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UnreadyRow {
                    id: r.try_get("id")?,
                    parallel_index: r.try_get::<Option<i64>, _>("parallel_index")?.map(to_u32),
                    parallel_count: r.try_get::<Option<i64>, _>("parallel_count")?.map(to_u32),
                    item: opt_json(r.try_get("item")?)?,
                })
            })
            .collect()
    }

    async fn outputs(&mut self, run_id: &str, tasks: &[String]) -> Result<Vec<OutputRow>> {
        let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new(
            "SELECT task_name, parallel_index, status, output FROM task_runs WHERE run_id = ",
        );
        qb.push_bind(run_id).push(" AND task_name");
        push_in_list(&mut qb, tasks);
        let rows = qb.build().fetch_all(&mut *self.conn).await?;
        rows.iter()
            .map(|r| {
                Ok(OutputRow {
                    task_name: r.try_get("task_name")?,
                    parallel_index: r.try_get::<Option<i64>, _>("parallel_index")?.map(to_u32),
                    status: task_status(r.try_get::<&str, _>("status")?)?,
                    output: opt_json(r.try_get("output")?)?,
                })
            })
            .collect()
    }

    async fn set_ready(&mut self, id: &str, input: &Value, now: DateTime<Utc>) -> Result<()> {
        sqlx::query("UPDATE task_runs SET input = ?1, ready_at = ?2 WHERE id = ?3")
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
            "UPDATE task_runs SET status = ?1, output = ?2, error = ?3, finished_at = ?4, \
             parallel_count = CASE WHEN ?1 = 'success' AND parallel_index IS NULL AND ?2 = '[]' THEN 0 ELSE parallel_count END \
             WHERE id = ?5",
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
        sqlx::query("DELETE FROM task_runs WHERE id = ?1")
            .bind(placeholder_id)
            .execute(&mut *self.conn)
            .await?;
        let count = u32::try_from(instances.len()).unwrap_or(u32::MAX);
        let rows: Vec<NewTaskRunRow<'_>> = instances
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
            .collect();
        insert_task_runs(self.conn, run_id, &rows, now).await
    }

    async fn has_unfinished(&mut self, run_id: &str, task: Option<&str>) -> Result<bool> {
        let found: Option<i64> = match task {
            Some(task) => {
                sqlx::query_scalar(
                    "SELECT 1 FROM task_runs WHERE run_id = ?1 AND task_name = ?2 \
                 AND status IN ('pending', 'dispatched', 'running') LIMIT 1",
                )
                .bind(run_id)
                .bind(task)
                .fetch_optional(&mut *self.conn)
                .await?
            }
            None => {
                sqlx::query_scalar(
                    "SELECT 1 FROM task_runs WHERE run_id = ?1 \
                 AND status IN ('pending', 'dispatched', 'running') LIMIT 1",
                )
                .bind(run_id)
                .fetch_optional(&mut *self.conn)
                .await?
            }
        };
        Ok(found.is_some())
    }

    async fn tally(&mut self, run_id: &str) -> Result<RunTally> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM task_runs WHERE run_id = ?1 GROUP BY status",
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
            let n = to_u32(row.try_get("n")?);
            tally.total += n;
            match task_status(row.try_get::<&str, _>("status")?)? {
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
            "UPDATE runs SET status = ?1, finished_at = ?2 WHERE id = ?3 AND status IN ('pending', 'running') \
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

// ---------- the store ----------

#[async_trait]
impl StateStore for SqliteStore {
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
        let mut tx = self.write.begin().await?;
        let current: Option<String> =
            sqlx::query_scalar("SELECT current_version FROM workflows WHERE name = ?1")
                .bind(&name)
                .fetch_optional(&mut *tx)
                .await?;
        let created = current.as_deref() != Some(deploy.version.as_str());
        if created {
            sqlx::query(
                "INSERT OR IGNORE INTO workflow_versions (version, workflow, yaml, definition, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .bind(&deploy.version)
            .bind(&name)
            .bind(&deploy.yaml)
            .bind(&definition)
            .bind(ms(now))
            .execute(&mut *tx)
            .await?;
            for (path, content) in &deploy.files {
                let hash = crate::hash::sha256_hex(content);
                sqlx::query("INSERT OR IGNORE INTO files (hash, content) VALUES (?1, ?2)")
                    .bind(&hash)
                    .bind(content.as_slice())
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT OR IGNORE INTO workflow_files (version, path, hash) VALUES (?1, ?2, ?3)",
                )
                .bind(&deploy.version)
                .bind(path)
                .bind(&hash)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "INSERT INTO workflows (name, current_version, created_at, updated_at) VALUES (?1, ?2, ?3, ?3) \
                 ON CONFLICT (name) DO UPDATE SET current_version = excluded.current_version, updated_at = excluded.updated_at",
            )
            .bind(&name)
            .bind(&deploy.version)
            .bind(ms(now))
            .execute(&mut *tx)
            .await?;
            insert_outbox(&mut tx, OutboxKind::Workflow, &deploy.version, None).await?;
        }
        tx.commit().await?;
        let record = self
            .get_workflow(&name)
            .await?
            .ok_or_else(|| Error::Corrupt(format!("workflow {name} vanished after deploy")))?;
        Ok((record, created))
    }

    async fn get_workflow(&self, name: &str) -> Result<Option<WorkflowRecord>> {
        let row = sqlx::query("SELECT * FROM workflows WHERE name = ?1")
            .bind(name)
            .fetch_optional(&self.read)
            .await?;
        match row {
            Some(row) => Ok(Some(self.workflow_record(&row).await?)),
            None => Ok(None),
        }
    }

    async fn list_workflows(&self) -> Result<Vec<WorkflowRecord>> {
        let rows = sqlx::query("SELECT * FROM workflows ORDER BY name")
            .fetch_all(&self.read)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(self.workflow_record(row).await?);
        }
        Ok(out)
    }

    async fn delete_workflow(&self, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM workflows WHERE name = ?1")
            .bind(name)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn get_version(&self, version: &str) -> Result<Option<Arc<CompiledVersion>>> {
        if let Some(found) = self
            .versions
            .lock()
            .ok()
            .and_then(|m| m.get(version).cloned())
        {
            return Ok(Some(found));
        }
        let Some(row) = sqlx::query(
            "SELECT version, yaml, definition, created_at FROM workflow_versions WHERE version = ?1",
        )
        .bind(version)
        .fetch_optional(&self.read)
        .await?
        else {
            return Ok(None);
        };
        let text: String = row.try_get("definition")?;
        let definition: WorkflowDefinition = serde_json::from_str(&text)
            .map_err(|e| Error::Corrupt(format!("definition of version {version}: {e}")))?;
        let dag = Dag::new(&definition)
            .map_err(|e| Error::Corrupt(format!("definition of version {version}: {e}")))?;
        let compiled = Arc::new(CompiledVersion {
            version: row.try_get("version")?,
            yaml: row.try_get("yaml")?,
            definition,
            dag,
            created_at: from_ms(row.try_get("created_at")?),
        });
        if let Ok(mut cache) = self.versions.lock() {
            cache.insert(version.to_owned(), compiled.clone());
        }
        Ok(Some(compiled))
    }

    async fn get_version_file(&self, version: &str, path: &str) -> Result<Option<Vec<u8>>> {
        Ok(sqlx::query_scalar(
            "SELECT f.content FROM workflow_files w JOIN files f ON f.hash = w.hash \
             WHERE w.version = ?1 AND w.path = ?2",
        )
        .bind(version)
        .bind(path)
        .fetch_optional(&self.read)
        .await?)
    }

    async fn create_run(&self, new: NewRun, now: DateTime<Utc>) -> Result<RunRecord> {
        let version = self.current_version(&new.workflow).await?;
        let mut changes = Vec::new();
        let mut tx = self.write.begin().await?;
        let run_id = self
            .insert_run(&mut tx, &new, &version, now, &mut changes)
            .await?;
        tx.commit().await?;
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
        .fetch_all(&self.read)
        .await?;
        let mut out = Vec::new();
        for row in &rows {
            let record = self.workflow_record(row).await?;
            if record.version.definition.schedule.is_some() {
                out.push((record, opt_ms(row.try_get("last_fire")?)));
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
        let version = self.current_version(workflow).await?;
        let mut tx = self.write.begin().await?;
        // The unique (workflow, fire_time) key makes a fire happen once, however
        // many schedulers see it due.
        let claimed = sqlx::query(
            "INSERT INTO schedule_fires (workflow, fire_time, run_id) VALUES (?1, ?2, '') \
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
        sqlx::query("UPDATE schedule_fires SET run_id = ?1 WHERE workflow = ?2 AND fire_time = ?3")
            .bind(&run_id)
            .bind(workflow)
            .bind(ms(fire_time))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.observer.committed(&changes);
        self.get_run(&run_id).await
    }

    async fn get_run(&self, id: &str) -> Result<Option<RunRecord>> {
        let row = sqlx::query("SELECT * FROM runs WHERE id = ?1")
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(run_record).transpose()
    }

    async fn list_runs(&self, workflow: Option<&str>, limit: u32) -> Result<Vec<RunRecord>> {
        let limit = i64::from(if limit == 0 { 100 } else { limit });
        let rows = match workflow {
            Some(w) => sqlx::query(
                "SELECT * FROM runs WHERE workflow = ?1 ORDER BY created_at DESC, id DESC LIMIT ?2",
            )
            .bind(w)
            .bind(limit)
            .fetch_all(&self.read)
            .await?,
            None => {
                sqlx::query("SELECT * FROM runs ORDER BY created_at DESC, id DESC LIMIT ?1")
                    .bind(limit)
                    .fetch_all(&self.read)
                    .await?
            }
        };
        rows.iter().map(run_record).collect()
    }

    async fn list_task_runs(&self, run_id: &str) -> Result<Vec<TaskRunRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {TASK_RUN_COLUMNS} FROM task_runs WHERE run_id = ?1 ORDER BY task_name, parallel_index"
        ))
        .bind(run_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(task_run_record).collect()
    }

    async fn get_task_run(&self, id: &str) -> Result<Option<TaskRunRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {TASK_RUN_COLUMNS} FROM task_runs WHERE id = ?1"
        ))
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(task_run_record).transpose()
    }

    async fn list_attempts(&self, task_run_id: &str) -> Result<Vec<AttemptRecord>> {
        let rows = sqlx::query("SELECT * FROM attempts WHERE task_run_id = ?1 ORDER BY attempt")
            .bind(task_run_id)
            .fetch_all(&self.read)
            .await?;
        let mut attempts = rows
            .iter()
            .map(attempt_record)
            .collect::<Result<Vec<_>>>()?;
        let metrics: Vec<MetricRow> = sqlx::query_as(
            "SELECT task_run_id, attempt, name, value FROM attempt_metrics WHERE task_run_id = ?1",
        )
        .bind(task_run_id)
        .fetch_all(&self.read)
        .await?;
        attach_metrics(&mut attempts, metrics);
        Ok(attempts)
    }

    async fn list_run_attempts(&self, run_id: &str) -> Result<Vec<AttemptRecord>> {
        let rows = sqlx::query(
            "SELECT a.* FROM attempts a JOIN task_runs t ON t.id = a.task_run_id \
             WHERE t.run_id = ?1 ORDER BY a.task_run_id, a.attempt",
        )
        .bind(run_id)
        .fetch_all(&self.read)
        .await?;
        let mut attempts = rows
            .iter()
            .map(attempt_record)
            .collect::<Result<Vec<_>>>()?;
        let metrics: Vec<MetricRow> = sqlx::query_as(
            "SELECT m.task_run_id, m.attempt, m.name, m.value FROM attempt_metrics m \
             JOIN task_runs t ON t.id = m.task_run_id WHERE t.run_id = ?1",
        )
        .bind(run_id)
        .fetch_all(&self.read)
        .await?;
        attach_metrics(&mut attempts, metrics);
        Ok(attempts)
    }

    async fn cancel_run(&self, id: &str, now: DateTime<Utc>) -> Result<Vec<ActiveAttempt>> {
        let mut tx = self.write.begin().await?;
        let run: Option<(String, String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT status, workflow, created_at, started_at FROM runs WHERE id = ?1",
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
        let rows = sqlx::query(&format!(
            "SELECT {CANCELLED_COLUMNS}, token, executor, executor_id FROM task_runs \
             WHERE run_id = ?1 AND status IN ('dispatched', 'running')"
        ))
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        let mut active = Vec::with_capacity(rows.len());
        let mut changes = Vec::with_capacity(rows.len() + 1);
        for r in &rows {
            changes.push(cancelled_attempt(r, id, &workflow, now)?);
            active.push(ActiveAttempt {
                fence: Fence {
                    task_run_id: r.try_get("id")?,
                    attempt: to_u32(r.try_get("attempt")?),
                    token: r.try_get::<Option<String>, _>("token")?.unwrap_or_default(),
                },
                executor: r.try_get("executor")?,
                executor_id: r.try_get("executor_id")?,
            });
        }
        for a in &active {
            sqlx::query(
                "UPDATE attempts SET status = 'cancelled', error = 'cancelled', finished_at = ?1 \
                 WHERE task_run_id = ?2 AND attempt = ?3",
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
            "UPDATE task_runs SET status = 'cancelled', error = 'cancelled', finished_at = ?1 \
             WHERE run_id = ?2 AND status IN ('pending', 'dispatched', 'running')",
        )
        .bind(ms(now))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE runs SET status = 'cancelled', finished_at = ?1 WHERE id = ?2")
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
        let run = self.get_run(id).await?.ok_or_else(|| Error::NotFound {
            what: format!("run {id}"),
        })?;
        if !run.status.is_terminal() {
            return Err(Error::FailedPrecondition(format!(
                "run {id} is still `{}`; wait for it to end or cancel it first",
                run.status
            )));
        }
        if run.status == RunStatus::Success && task.is_none() {
            return Err(Error::FailedPrecondition(format!(
                "run {id} succeeded; name a task with --task to re-run it and what follows it"
            )));
        }
        let version = self.compiled(&run.workflow_version).await?;
        let mut tx = self.write.begin().await?;
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
                    "SELECT DISTINCT task_name FROM task_runs WHERE run_id = ?1 \
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
                sqlx::query("DELETE FROM task_runs WHERE run_id = ?1 AND task_name = ?2")
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
                 WHERE run_id = ?1 AND task_name = ?2{filter}"
            ))
            .bind(id)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "UPDATE runs SET status = 'running', finished_at = NULL, owner = ?2, lease_expires = ?3 WHERE id = ?1",
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
        self.observer.committed(&changes);
        Ok(())
    }

    async fn get_logs(&self, query: &LogQuery) -> Result<Vec<LogRecord>> {
        let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new(
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
        let rows = qb.build().fetch_all(&self.read).await?;
        rows.iter()
            .map(|r| {
                Ok(LogRecord {
                    id: r.try_get("id")?,
                    task_run_id: r.try_get("task_run_id")?,
                    task_name: r.try_get("task_name")?,
                    parallel_index: r.try_get::<Option<i64>, _>("parallel_index")?.map(to_u32),
                    attempt: to_u32(r.try_get("attempt")?),
                    stream: r.try_get("stream")?,
                    line: r.try_get("line")?,
                    time: from_ms(r.try_get("time")?),
                })
            })
            .collect()
    }

    async fn acquire_runs(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<String>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE runs SET owner = ?1, lease_expires = ?2 WHERE id IN ( \
                 SELECT id FROM runs WHERE status IN ('pending', 'running') \
                 AND COALESCE(lease_expires, 0) < ?3 LIMIT ?4) \
             RETURNING id",
        )
        .bind(owner)
        .bind(ms(now) + self.lease_ms())
        .bind(ms(now))
        .bind(i64::from(limit))
        .fetch_all(&self.write)
        .await?;
        Ok(ids)
    }

    async fn renew_leases(&self, owner: &str, now: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE runs SET lease_expires = ?2 WHERE owner = ?1 AND status IN ('pending', 'running') \
             AND lease_expires >= ?3",
        )
        .bind(owner)
        .bind(ms(now) + self.lease_ms())
        .bind(ms(now))
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected())
    }

    async fn release_leases(&self, owner: &str) -> Result<()> {
        sqlx::query("UPDATE runs SET owner = NULL, lease_expires = NULL WHERE owner = ?1")
            .bind(owner)
            .execute(&self.write)
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
        let pool = &capacity.pool;
        let now_ms = ms(now);
        let limit = i64::from(limit);
        let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new(
            "UPDATE task_runs SET status = 'dispatched', attempt = attempt + 1, \
             token = lower(hex(randomblob(16))), dispatched_at = ",
        );
        qb.push_bind(now_ms)
            .push(", started_at = NULL, heartbeat_at = ")
            .push_bind(now_ms)
            .push(", deadline_at = ")
            .push_bind(now_ms)
            .push(" + timeout_seconds * 1000, executor_id = NULL WHERE id IN (SELECT id FROM (")
            .push("SELECT * FROM (SELECT id, ready_at FROM (");
        // 1. Ready task runs with no cap, oldest first.
        qb.push(
            "SELECT * FROM (SELECT id, ready_at FROM task_runs WHERE status = 'pending' \
             AND ready_at IS NOT NULL AND concurrency IS NULL AND executor <> 'workers' AND ready_at <= ",
        )
        .push_bind(now_ms)
        .push(" ORDER BY ready_at LIMIT ")
        .push_bind(limit)
        .push(")");
        // 2. Capped ones: only as many per (run, task) as the cap leaves free.
        qb.push(
            " UNION ALL SELECT id, ready_at FROM ( \
             SELECT r.id, r.ready_at, r.concurrency, COALESCE(a.n, 0) AS active, \
             ROW_NUMBER() OVER (PARTITION BY r.run_id, r.task_name ORDER BY r.ready_at, r.parallel_index) AS rn \
             FROM task_runs r LEFT JOIN (SELECT run_id, task_name, COUNT(*) AS n FROM task_runs \
             WHERE status IN ('dispatched', 'running') AND concurrency IS NOT NULL GROUP BY run_id, task_name) a \
             ON a.run_id = r.run_id AND a.task_name = r.task_name \
             WHERE r.status = 'pending' AND r.ready_at IS NOT NULL AND r.concurrency IS NOT NULL \
             AND r.executor <> 'workers' AND r.ready_at <= ",
        )
        .push_bind(now_ms)
        .push(") WHERE rn + active <= concurrency")
            // Launched attempts only up to the executors' free slots.
            .push(") ORDER BY ready_at LIMIT ")
            .push_bind(i64::from(capacity.launched.min(u32::try_from(limit).unwrap_or(u32::MAX))))
            .push(")");
        // 3. Pool tasks: only as many per handler as connected workers have free slots.
        let free: Vec<(&String, &u32)> = pool.iter().filter(|(_, n)| **n > 0).collect();
        if !free.is_empty() {
            qb.push(
                " UNION ALL SELECT w.id, w.ready_at FROM (SELECT r.id, r.ready_at, r.handler, \
                 ROW_NUMBER() OVER (PARTITION BY r.handler ORDER BY r.ready_at, r.parallel_index) AS rn \
                 FROM task_runs r WHERE r.status = 'pending' AND r.ready_at IS NOT NULL \
                 AND r.executor = 'workers' AND r.ready_at <= ",
            )
            .push_bind(now_ms)
            .push(") w JOIN (");
            let mut sep = false;
            for (handler, n) in &free {
                if sep {
                    qb.push(" UNION ALL ");
                }
                sep = true;
                qb.push("SELECT ")
                    .push_bind(handler.as_str())
                    .push(" AS handler, ")
                    .push_bind(i64::from(**n))
                    .push(" AS free");
            }
            qb.push(") c ON c.handler = w.handler WHERE w.rn <= c.free");
        }
        qb.push(") ORDER BY ready_at LIMIT ")
            .push_bind(limit)
            .push(") AND run_id IN (SELECT id FROM runs WHERE owner = ")
            .push_bind(owner)
            .push(" AND lease_expires >= ")
            .push_bind(now_ms)
            .push(") RETURNING id, attempt, token, run_id, task_name, executor, handler, timeout_seconds");
        let mut tx = self.write.begin().await?;
        let rows = qb.build().fetch_all(&mut *tx).await?;
        let mut claims = Vec::with_capacity(rows.len());
        for r in &rows {
            claims.push(Claim {
                fence: Fence {
                    task_run_id: r.try_get("id")?,
                    attempt: to_u32(r.try_get("attempt")?),
                    token: r.try_get("token")?,
                },
                run_id: r.try_get("run_id")?,
                task_name: r.try_get("task_name")?,
                executor: r.try_get("executor")?,
                handler: r.try_get("handler")?,
                timeout_seconds: to_u32(r.try_get("timeout_seconds")?),
            });
        }
        for chunk in claims.chunks(INSERT_CHUNK) {
            let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new(
                "INSERT INTO attempts (task_run_id, attempt, status, dispatched_at) ",
            );
            qb.push_values(chunk, |mut b, c| {
                b.push_bind(c.fence.task_run_id.as_str())
                    .push_bind(i64::from(c.fence.attempt))
                    .push_bind("dispatched")
                    .push_bind(ms(now));
            });
            qb.build().execute(&mut *tx).await?;
            let mut qb: QueryBuilder<'_, Sqlite> =
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

    async fn release_claim(&self, fence: &Fence) -> Result<bool> {
        let mut tx = self.write.begin().await?;
        let done = sqlx::query(
            "UPDATE task_runs SET status = 'pending', attempt = attempt - 1, token = NULL, dispatched_at = NULL, \
             heartbeat_at = NULL, deadline_at = NULL WHERE id = ?1 AND attempt = ?2 AND token = ?3 AND status = 'dispatched'",
        )
        .bind(&fence.task_run_id)
        .bind(i64::from(fence.attempt))
        .bind(&fence.token)
        .execute(&mut *tx)
        .await?;
        let released = done.rows_affected() == 1;
        if released {
            sqlx::query("DELETE FROM attempts WHERE task_run_id = ?1 AND attempt = ?2")
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
            "UPDATE task_runs SET executor_id = ?1 WHERE id = ?2 AND attempt = ?3 AND token = ?4",
        )
        .bind(executor_id)
        .bind(&fence.task_run_id)
        .bind(i64::from(fence.attempt))
        .bind(&fence.token)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn fail_attempt(
        &self,
        fence: &Fence,
        failure: &Failure,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.write.begin().await?;
        if already_settled(&mut tx, fence, TaskStatus::Failed).await? {
            return Ok(());
        }
        let row = check_fence(&mut tx, fence, &ACTIVE).await?;
        let version = self.compiled(&row.workflow_version).await?;
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
            "UPDATE attempts SET status = 'failed', error = ?1, finished_at = ?2 WHERE task_run_id = ?3 AND attempt = ?4",
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
                "UPDATE task_runs SET status = 'pending', error = ?1, executor_id = NULL, \
                 ready_at = CASE WHEN ?3 = 1 THEN MIN(COALESCE(ready_at, ?2), ?2) ELSE ?2 END, \
                 attempt_base = attempt_base + ?3, lost_count = lost_count + ?3 WHERE id = ?4",
            )
            .bind(&failure.error)
            .bind(ms(ready_at))
            .bind(i64::from(lost_retry))
            .bind(&fence.task_run_id)
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query(
                "UPDATE task_runs SET status = 'failed', error = ?1, finished_at = ?2 WHERE id = ?3",
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
        tx.commit().await?;
        self.observer.committed(&changes);
        Ok(())
    }

    async fn expired_attempts(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        heartbeat_timeout: Duration,
    ) -> Result<Vec<ExpiredAttempt>> {
        self.flush_beats().await?;
        let silent_since =
            ms(now) - i64::try_from(heartbeat_timeout.as_millis()).unwrap_or(i64::MAX);
        let rows = sqlx::query(
            "SELECT id, attempt, token, executor, executor_id, timeout_seconds, deadline_at FROM task_runs \
             WHERE status IN ('dispatched', 'running') AND (deadline_at <= ?1 OR heartbeat_at <= ?2) \
             AND run_id IN (SELECT id FROM runs WHERE owner = ?3 AND lease_expires >= ?1)",
        )
        .bind(ms(now))
        .bind(silent_since)
        .bind(owner)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                let deadline: Option<i64> = r.try_get("deadline_at")?;
                Ok(ExpiredAttempt {
                    fence: Fence {
                        task_run_id: r.try_get("id")?,
                        attempt: to_u32(r.try_get("attempt")?),
                        token: r.try_get::<Option<String>, _>("token")?.unwrap_or_default(),
                    },
                    executor: r.try_get("executor")?,
                    executor_id: r.try_get("executor_id")?,
                    kind: if deadline.is_some_and(|d| d <= ms(now)) {
                        FailureKind::Timeout
                    } else {
                        FailureKind::Lost
                    },
                    timeout_seconds: to_u32(r.try_get("timeout_seconds")?),
                })
            })
            .collect()
    }

    async fn recover(&self, owner: &str, now: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE task_runs SET heartbeat_at = ?1 WHERE status IN ('dispatched', 'running') \
             AND run_id IN (SELECT id FROM runs WHERE owner = ?2)",
        )
        .bind(ms(now))
        .bind(owner)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected())
    }

    async fn promote_pending_runs(&self, owner: &str, now: DateTime<Utc>) -> Result<u32> {
        let waiting: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT id, workflow, workflow_version FROM runs WHERE status = 'pending' AND owner = ?1 \
             ORDER BY created_at, id",
        )
        .bind(owner)
        .fetch_all(&self.read)
        .await?;
        if waiting.is_empty() {
            return Ok(0);
        }
        let mut promoted = 0;
        let mut changes = Vec::new();
        let mut tx = self.write.begin().await?;
        for (id, workflow, version) in waiting {
            let version = self.compiled(&version).await?;
            let cap = version.definition.concurrency.map_or(i64::MAX, i64::from);
            let running: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM runs WHERE workflow = ?1 AND status = 'running'",
            )
            .bind(&workflow)
            .fetch_one(&mut *tx)
            .await?;
            if running >= cap {
                continue;
            }
            let done = sqlx::query(
                "UPDATE runs SET status = 'running', started_at = ?1 WHERE id = ?2 AND status = 'pending'",
            )
            .bind(ms(now))
            .bind(&id)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 1 {
                changes.push(Change::RunStarted {
                    run_id: id.clone(),
                    workflow: workflow.clone(),
                });
                advance::evaluate_all(
                    &mut Tx {
                        conn: &mut tx,
                        outputs: self.outputs.get().cloned(),
                        changes: &mut changes,
                    },
                    &version,
                    &id,
                    self.limits,
                    now,
                )
                .await?;
                insert_outbox(&mut tx, OutboxKind::Run, &id, None).await?;
                promoted += 1;
            }
        }
        tx.commit().await?;
        self.observer.committed(&changes);
        Ok(promoted)
    }

    async fn next_ready_at(&self) -> Result<Option<DateTime<Utc>>> {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(ready_at) FROM task_runs WHERE status = 'pending' AND ready_at IS NOT NULL",
        )
        .fetch_one(&self.read)
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
             AND ready_at IS NOT NULL AND ready_at <= ?1 \
             AND run_id IN (SELECT id FROM runs WHERE owner = ?2 AND lease_expires >= ?3) \
             ORDER BY ready_at LIMIT ?4",
        )
        .bind(ms(ready_before))
        .bind(owner)
        .bind(ms(now))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
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
        let mut tx = self.write.begin().await?;
        let row: Option<(String, String, String)> = sqlx::query_as(
            "SELECT t.run_id, t.task_name, r.workflow_version FROM task_runs t \
             JOIN runs r ON r.id = t.run_id WHERE t.id = ?1 AND t.status = 'pending'",
        )
        .bind(task_run_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((run_id, task_name, version)) = row else {
            return Ok(false);
        };
        let version = self.compiled(&version).await?;
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
        tx.commit().await?;
        self.observer.committed(&changes);
        Ok(true)
    }

    async fn attempt_spec(&self, fence: &Fence) -> Result<AttemptSpec> {
        let mut conn = self.read.acquire().await?;
        let row = check_fence(&mut conn, fence, &ACTIVE).await?;
        let version = self.compiled(&row.workflow_version).await?;
        let task = version.task(&row.task_name).ok_or_else(|| {
            Error::Corrupt(format!(
                "task {} missing from version {}",
                row.task_name, version.version
            ))
        })?;
        let detail = sqlx::query(
            "SELECT t.input, t.parallel_index, t.parallel_count, t.deadline_at, r.workflow \
             FROM task_runs t JOIN runs r ON r.id = t.run_id WHERE t.id = ?1",
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
            workflow: detail.try_get("workflow")?,
            task_name: row.task_name.clone(),
            task_run_id: fence.task_run_id.clone(),
            attempt: fence.attempt,
            parallel_index: detail
                .try_get::<Option<i64>, _>("parallel_index")?
                .map(to_u32),
            parallel_count: detail
                .try_get::<Option<i64>, _>("parallel_count")?
                .map(to_u32),
            input: opt_json(detail.try_get("input")?)?.unwrap_or(Value::Null),
            env: task.env.clone(),
            timeout_seconds: task.timeout_seconds,
            deadline: opt_ms(detail.try_get("deadline_at")?),
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
        let mut tx = self.write.begin().await?;
        let row = check_fence(&mut tx, fence, &ACTIVE).await?;
        let mut changes = Vec::new();
        if row.status == TaskStatus::Dispatched {
            changes.push(row.started(now));
            sqlx::query(
                "UPDATE task_runs SET status = 'running', started_at = ?1, heartbeat_at = ?1 WHERE id = ?2",
            )
            .bind(ms(now))
            .bind(&fence.task_run_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE attempts SET status = 'running', started_at = ?1 WHERE task_run_id = ?2 AND attempt = ?3",
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
        self.observer.committed(&changes);
        Ok(())
    }

    async fn heartbeat(&self, fence: &Fence, now: DateTime<Utc>) -> Result<bool> {
        let mut conn = self.read.acquire().await?;
        let allowed = [
            TaskStatus::Dispatched,
            TaskStatus::Running,
            TaskStatus::Cancelled,
        ];
        let row = check_fence(&mut conn, fence, &allowed).await?;
        if row.status == TaskStatus::Cancelled {
            return Ok(true);
        }
        drop(conn);
        let mut beats = self.beats.lock().unwrap_or_else(|e| e.into_inner());
        let beat = beats
            .entry(fence.task_run_id.clone())
            .or_insert((fence.attempt, ms(now)));
        if beat.0 != fence.attempt || beat.1 < ms(now) {
            *beat = (fence.attempt, ms(now));
        }
        Ok(false)
    }

    async fn append_logs(&self, fence: &Fence, lines: &[NewLogLine]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut tx = self.write.begin().await?;
        let allowed = [
            TaskStatus::Dispatched,
            TaskStatus::Running,
            TaskStatus::Cancelled,
        ];
        let row = check_fence(&mut tx, fence, &allowed).await?;
        for chunk in lines.chunks(INSERT_CHUNK) {
            let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new(
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
        let mut tx = self.write.begin().await?;
        if already_settled(&mut tx, fence, TaskStatus::Success).await? {
            return Ok(());
        }
        let row = check_fence(&mut tx, fence, &ACTIVE).await?;
        let version = self.compiled(&row.workflow_version).await?;
        if let Some(task) = version.task(&row.task_name) {
            // A marker was checked before its content was uploaded.
            if output_ref(&output).is_none() {
                ork_domain::types::validate_output(task, &version.definition, &output)
                    .map_err(Error::InvalidOutput)?;
            }
        }
        let mut changes = Vec::with_capacity(2);
        if row.status == TaskStatus::Dispatched {
            changes.push(row.started(now));
        }
        changes.push(row.finished(fence, AttemptOutcome::Success, None, metrics, now));
        insert_metrics(&mut tx, fence, metrics).await?;
        sqlx::query(
            "UPDATE task_runs SET status = 'success', output = ?1, error = NULL, finished_at = ?2, \
             started_at = COALESCE(started_at, ?2) WHERE id = ?3",
        )
        .bind(json_text(&output))
        .bind(ms(now))
        .bind(&fence.task_run_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE attempts SET status = 'success', finished_at = ?1, started_at = COALESCE(started_at, ?1) \
             WHERE task_run_id = ?2 AND attempt = ?3",
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
        tx.commit().await?;
        self.observer.committed(&changes);
        Ok(())
    }

    async fn queue_stats(&self, owner: &str, now: DateTime<Utc>) -> Result<QueueStats> {
        let (upstream, delayed, ready, dispatched, running): (i64, i64, i64, i64, i64) =
            sqlx::query_as(QUEUE_STATS_SQLITE)
                .bind(ms(now))
                .fetch_one(&self.read)
                .await?;
        let (runs_pending, runs_running, leased): (i64, i64, i64) = sqlx::query_as(
            "SELECT COALESCE(SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END), 0), \
             COALESCE(SUM(CASE WHEN status = 'running' THEN 1 ELSE 0 END), 0), \
             COALESCE(SUM(CASE WHEN owner = ?1 AND lease_expires >= ?2 THEN 1 ELSE 0 END), 0) \
             FROM runs WHERE status IN ('pending', 'running')",
        )
        .bind(owner)
        .bind(ms(now))
        .fetch_one(&self.read)
        .await?;
        let outbox: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
            .fetch_one(&self.read)
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
        let rows = sqlx::query("SELECT id, kind, key, attempt FROM outbox ORDER BY id LIMIT ?1")
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get("kind")?;
                Ok(OutboxEntry {
                    id: r.try_get("id")?,
                    kind: OutboxKind::parse(&kind)
                        .ok_or_else(|| Error::Corrupt(format!("outbox kind `{kind}`")))?,
                    key: r.try_get("key")?,
                    attempt: r.try_get::<Option<i64>, _>("attempt")?.map(to_u32),
                })
            })
            .collect()
    }

    async fn outbox_ack(&self, ids: &[i64]) -> Result<()> {
        for chunk in ids.chunks(INSERT_CHUNK) {
            let mut qb: QueryBuilder<'_, Sqlite> =
                QueryBuilder::new("DELETE FROM outbox WHERE id IN (");
            let mut sep = qb.separated(", ");
            for id in chunk {
                sep.push_bind(*id);
            }
            sep.push_unseparated(")");
            qb.build().execute(&self.write).await?;
        }
        Ok(())
    }
}
