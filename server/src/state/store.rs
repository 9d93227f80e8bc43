//! [`Store`]: every role of the state store, written once over a
//! [`Backend`]. Reads and the small writes live here; the transitions that
//! move runs forward live in `transitions.rs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use ork_domain::WorkflowDefinition;
use ork_domain::attempt::{self, Current};
use ork_domain::dag::Dag;
use serde_json::Value;

use super::advance::Env;
use super::rows::*;
use super::sql::{Arg, Backend, CHUNK, Columns, Conn, Query, RowOf, retrying};
use super::*;
use crate::notify::{Changes, Notifier};
use tracing::Instrument as _;

/// The state store over one backend ([`sqlite::SqliteStore`],
/// [`postgres::PostgresStore`]). The backend seam is internal to this module
/// on purpose: the store is only ever one of those two.
/// A task file of a version: (version, path).
type FileKey = (String, String);

/// Most bytes of task files kept in memory for specs.
const FILE_CACHE_BYTES: usize = 64 << 20;

#[allow(private_bounds)]
pub struct Store<B: Backend> {
    backend: B,
    /// Compiled workflow versions: immutable, so cached for good.
    versions: Mutex<HashMap<String, Arc<CompiledVersion>>>,
    /// Fired after every commit.
    notifier: Notifier,
    /// Task files by (version, path), for the specs claims build.
    files: Mutex<HashMap<FileKey, Arc<[u8]>>>,
    pub(super) limits: Limits,
    /// Where large outputs live; set once by the server.
    outputs: OnceLock<Arc<dyn OutputStore>>,
    /// Heartbeats not written yet: task run id → (attempt, time in ms).
    /// A beat is checked against the database (fence, cancellation) on a
    /// read connection, but only remembered here; [`Attempts::flush_heartbeats`]
    /// writes them all in one transaction (the scheduler calls it every tick,
    /// and before it looks for silent attempts), so a beat costs no commit.
    beats: Mutex<HashMap<String, (u32, i64)>>,
}

#[allow(private_bounds)]
impl<B: Backend> Store<B> {
    pub(super) fn new(backend: B, limits: Limits) -> Self {
        Self {
            backend,
            versions: Mutex::new(HashMap::new()),
            files: Mutex::new(HashMap::new()),
            notifier: Notifier::default(),
            limits,
            outputs: OnceLock::new(),
            beats: Mutex::new(HashMap::new()),
        }
    }

    /// Runs the write transaction `op` (again while it loses a race; see
    /// [`retrying`]), timed for the observer as `operation`. Under a
    /// request's span it gets a span of its own; the loops' polling would
    /// otherwise fill the trace backend with one-span traces.
    pub(super) async fn write<T, F, Fut>(&self, operation: &'static str, op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let start = std::time::Instant::now();
        let out = if tracing::Span::current().is_none() {
            retrying::<B, _, _, _>(op).await
        } else {
            let span = tracing::info_span!("state", otel.name = operation, operation);
            retrying::<B, _, _, _>(op).instrument(span).await
        };
        self.notifier
            .transaction(operation, start.elapsed().as_secs_f64());
        out
    }

    pub(super) fn backend(&self) -> &B {
        &self.backend
    }

    /// Fires the notifier: call after a commit, with what it changed.
    /// A transaction committed `transitions`: tell the observer, wake
    /// whoever cares.
    pub(super) fn notify(&self, changes: Changes, transitions: &[Transition]) {
        self.notifier.committed(changes, transitions);
    }

    pub(super) fn env(&self) -> Env {
        Env {
            limits: self.limits,
            outputs: self.outputs.get().cloned(),
        }
    }

    /// Every row of a read, decoded.
    async fn read_all<T>(
        &self,
        query: Query,
        decode: impl Fn(&RowOf<B>) -> Result<T>,
    ) -> Result<Vec<T>> {
        let rows = self.backend.read().await?.fetch_all(query).await?;
        rows.iter().map(decode).collect()
    }

    /// The rows of `sql`, whose `$1` is a list of ids, for all of `ids`:
    /// read `CHUNK` ids at a time, so no statement grows with the input.
    async fn read_by_ids<T>(
        &self,
        sql: &str,
        ids: &[String],
        decode: impl Fn(&RowOf<B>) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNK) {
            out.extend(
                self.read_all(Query::new(sql.to_owned()).bind(chunk), &decode)
                    .await?,
            );
        }
        Ok(out)
    }

    /// The row of a read, if any, decoded.
    async fn read_optional<T>(
        &self,
        query: Query,
        decode: impl Fn(&RowOf<B>) -> Result<T>,
    ) -> Result<Option<T>> {
        let row = self.backend.read().await?.fetch_optional(query).await?;
        row.as_ref().map(decode).transpose()
    }

    pub(super) fn lease_ms(&self) -> i64 {
        duration_ms(self.limits.lease)
    }

    /// A compiled version, read through `conn` when not cached: a
    /// transaction must never wait for a second pooled connection, or
    /// concurrent transactions can starve the pool.
    pub(super) async fn version_in<C: Conn>(
        &self,
        conn: &mut C,
        version: &str,
    ) -> Result<Arc<CompiledVersion>> {
        self.load_version(conn, version)
            .await?
            .ok_or_else(|| Error::Corrupt(format!("workflow version {version} is missing")))
    }

    async fn load_version<C: Conn>(
        &self,
        conn: &mut C,
        version: &str,
    ) -> Result<Option<Arc<CompiledVersion>>> {
        if let Some(found) = self
            .versions
            .lock()
            .ok()
            .and_then(|m| m.get(version).cloned())
        {
            return Ok(Some(found));
        }
        let Some(row) = conn
            .fetch_optional(
                Query::new(
                    "SELECT version, yaml, definition, created_at FROM workflow_versions WHERE version = $1",
                )
                .bind(version),
            )
            .await?
        else {
            return Ok(None);
        };
        let definition: WorkflowDefinition = serde_json::from_str(&row.text("definition")?)
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

    pub(super) async fn current_version(&self, workflow: &str) -> Result<Arc<CompiledVersion>> {
        let record = self
            .get_workflow(workflow)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: format!("workflow `{workflow}` (deploy it with `ork workflow deploy FILE`)"),
            })?;
        Ok(record.version)
    }

    async fn workflow_record<R: Columns>(&self, row: &R) -> Result<WorkflowRecord> {
        let version = row.text("current_version")?;
        let mut conn = self.backend.read().await?;
        Ok(WorkflowRecord {
            name: row.text("name")?,
            version: self.version_in(&mut *conn, &version).await?,
            created_at: from_ms(row.int("created_at")?),
            updated_at: from_ms(row.int("updated_at")?),
        })
    }

    async fn deploy_once(
        &self,
        deploy: &NewWorkflowVersion,
        name: &str,
        definition: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut tx = self.backend.begin().await?;
        let current = tx
            .fetch_optional(
                Query::new("SELECT current_version FROM workflows WHERE name = $1 FOR UPDATE")
                    .bind(name),
            )
            .await?
            .map(|r| r.text("current_version"))
            .transpose()?;
        let created = current.as_deref() != Some(deploy.version.as_str());
        if created {
            tx.execute(
                Query::new(
                    "INSERT INTO workflow_versions (version, workflow, yaml, definition, created_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                )
                .bind(&deploy.version)
                .bind(name)
                .bind(&deploy.yaml)
                .bind(definition)
                .bind(ms(now)),
            )
            .await?;
            for (path, content) in &deploy.files {
                let hash = crate::hash::sha256_hex(content);
                tx.execute(
                    Query::new(
                        "INSERT INTO files (hash, content) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    )
                    .bind(&hash)
                    .bind(content.clone()),
                )
                .await?;
                tx.execute(
                    Query::new(
                        "INSERT INTO workflow_files (version, path, hash) VALUES ($1, $2, $3) \
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(&deploy.version)
                    .bind(path)
                    .bind(&hash),
                )
                .await?;
            }
            tx.execute(
                Query::new(
                    "INSERT INTO workflows (name, current_version, created_at, updated_at) VALUES ($1, $2, $3, $3) \
                     ON CONFLICT (name) DO UPDATE SET current_version = excluded.current_version, \
                     updated_at = excluded.updated_at",
                )
                .bind(name)
                .bind(&deploy.version)
                .bind(ms(now)),
            )
            .await?;
            insert_outbox(&mut *tx, OutboxKind::Workflow, &deploy.version, None).await?;
        }
        tx.commit().await?;
        Ok(created)
    }

    /// The task run `fence` names, as the fence checks read it.
    /// With `share`, the row is locked against a concurrent report (appended
    /// log lines must not follow a retry's reset).
    pub(super) async fn current<C: Conn>(
        conn: &mut C,
        fence: &Fence,
        share: bool,
    ) -> Result<(Current, C::Row)> {
        let sql: &'static str = match share {
            false => {
                "SELECT t.status, t.attempt, t.token, t.attempt_base, t.lost_count, t.ready_at, t.run_id, \
                 t.task_name, t.input, t.parallel_index, t.parallel_count, t.deadline_at, \
                 r.workflow, r.workflow_version FROM task_runs t JOIN runs r ON r.id = t.run_id WHERE t.id = $1"
            }
            true => {
                "SELECT t.status, t.attempt, t.token, t.attempt_base, t.lost_count, t.ready_at, t.run_id, \
                 t.task_name, t.input, t.parallel_index, t.parallel_count, t.deadline_at, \
                 r.workflow, r.workflow_version FROM task_runs t JOIN runs r ON r.id = t.run_id WHERE t.id = $1 \
                 FOR SHARE OF t"
            }
        };
        let row = conn
            .fetch_optional(Query::new(sql).bind(&fence.task_run_id))
            .await?
            .ok_or_else(|| Error::NotFound {
                what: format!("task run {}", fence.task_run_id),
            })?;
        let current = Current {
            status: task_status(&row.text("status")?)?,
            attempt: to_u32(row.int("attempt")?),
            token: row.opt_text("token")?,
            attempt_base: to_u32(row.int("attempt_base")?),
            lost_count: to_u32(row.int("lost_count")?),
            ready_at: opt_ms(row.opt_int("ready_at")?),
            reported: None,
        };
        Ok((current, row))
    }

    /// The spec of the attempt `fence` names, from its task run's row
    /// (`task_name`, `run_id`, `input`, `parallel_index`, `parallel_count`,
    /// `deadline_at`) and its run's workflow and version.
    pub(super) async fn spec_in<C: Conn, R: Columns>(
        &self,
        conn: &mut C,
        fence: &Fence,
        row: &R,
        workflow: String,
        version: &str,
    ) -> Result<AttemptSpec> {
        let version = self.version_in(conn, version).await?;
        let task_name = row.text("task_name")?;
        let task = version.task(&task_name).ok_or_else(|| {
            Error::Corrupt(format!(
                "task {task_name} missing from version {}",
                version.version
            ))
        })?;
        let mut file_content = Vec::new();
        if let Some(file) = &task.file {
            file_content = self.file_in(conn, &version.version, file).await?;
        }
        let mut config_file_content = Vec::new();
        if let Some(file) = &task.config_file {
            config_file_content = self.file_in(conn, &version.version, file).await?;
        }
        Ok(AttemptSpec {
            run_id: row.text("run_id")?,
            workflow,
            task_name,
            task_run_id: fence.task_run_id.clone(),
            attempt: fence.attempt,
            parallel_index: opt_u32(row.opt_int("parallel_index")?),
            parallel_count: opt_u32(row.opt_int("parallel_count")?),
            input: opt_json(row.opt_text("input")?)?.unwrap_or(Value::Null),
            env: task.env.clone(),
            timeout_seconds: task.timeout_seconds,
            deadline: opt_ms(row.opt_int("deadline_at")?),
            file: task.file.clone(),
            file_content,
            config_file: task.config_file.clone(),
            config_file_content,
            handler: task.handler.clone(),
            image: task.image.clone(),
            image_pull_policy: task.image_pull_policy,
            cpu: task.resources.cpu.clone(),
            memory: task.resources.memory.clone(),
            command: task.command.clone(),
            python: task.python.clone(),
        })
    }

    /// A task file of a version (empty when missing), cached: versions are
    /// immutable, and a fan-out's instances all carry the same file.
    async fn file_in<C: Conn>(&self, conn: &mut C, version: &str, path: &str) -> Result<Vec<u8>> {
        let key = (version.to_owned(), path.to_owned());
        if let Some(found) = self.files.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(found.to_vec());
        }
        let content = conn
            .fetch_optional(
                Query::new(
                    "SELECT f.content FROM workflow_files w JOIN files f ON f.hash = w.hash \
                     WHERE w.version = $1 AND w.path = $2",
                )
                .bind(version)
                .bind(path),
            )
            .await?
            .map(|r| r.bytes("content"))
            .transpose()?
            .unwrap_or_default();
        if let Ok(mut cache) = self.files.lock() {
            let held: usize = cache.values().map(|c| c.len()).sum();
            if held + content.len() > FILE_CACHE_BYTES {
                cache.clear();
            }
            if content.len() <= FILE_CACHE_BYTES / 8 {
                cache.insert(key, Arc::from(content.as_slice()));
            }
        }
        Ok(content)
    }

    fn beat(&self, fence: &Fence, now: DateTime<Utc>) {
        let mut beats = self.beats.lock().unwrap_or_else(|e| e.into_inner());
        let beat = beats
            .entry(fence.task_run_id.clone())
            .or_insert((fence.attempt, ms(now)));
        if beat.0 != fence.attempt || beat.1 < ms(now) {
            *beat = (fence.attempt, ms(now));
        }
    }
}

/// Maps a refusal of the domain's fence check to the store's error.
pub(super) fn refused(fence: &Fence, refusal: attempt::Refusal) -> Error {
    match refusal {
        attempt::Refusal::Stale {
            current_attempt,
            status,
        } => Error::Stale {
            task_run_id: fence.task_run_id.clone(),
            attempt: fence.attempt,
            current_attempt,
            status: status.to_string(),
        },
        attempt::Refusal::InvalidOutput(message) => Error::InvalidOutput(message),
    }
}

#[async_trait]
impl<B: Backend> Definitions for Store<B> {
    async fn deploy_workflow(
        &self,
        deploy: NewWorkflowVersion,
        now: DateTime<Utc>,
    ) -> Result<(WorkflowRecord, bool)> {
        let name = deploy.definition.name.clone();
        let definition = serde_json::to_string(&deploy.definition)
            .map_err(|e| Error::Corrupt(format!("definition: {e}")))?;
        let created = self
            .write("deploy_workflow", || {
                self.deploy_once(&deploy, &name, &definition, now)
            })
            .await?;
        if created {
            self.notifier.fire(Changes::OUTBOX);
        }
        let record = self
            .get_workflow(&name)
            .await?
            .ok_or_else(|| Error::Corrupt(format!("workflow {name} vanished after deploy")))?;
        Ok((record, created))
    }

    async fn get_workflow(&self, name: &str) -> Result<Option<WorkflowRecord>> {
        let row = self
            .backend
            .read()
            .await?
            .fetch_optional(Query::new("SELECT * FROM workflows WHERE name = $1").bind(name))
            .await?;
        match row {
            Some(row) => Ok(Some(self.workflow_record(&row).await?)),
            None => Ok(None),
        }
    }

    async fn list_workflows(&self) -> Result<Vec<WorkflowRecord>> {
        let rows = self
            .backend
            .read()
            .await?
            .fetch_all(Query::new("SELECT * FROM workflows ORDER BY name"))
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(self.workflow_record(row).await?);
        }
        Ok(out)
    }

    async fn delete_workflow(&self, name: &str) -> Result<bool> {
        let mut tx = self.backend.begin().await?;
        let done = tx
            .execute(Query::new("DELETE FROM workflows WHERE name = $1").bind(name))
            .await?;
        // A pause belongs to the deployed workflow: one deployed again
        // under the same name starts with its schedule active.
        tx.execute(Query::new("DELETE FROM schedule_states WHERE workflow = $1").bind(name))
            .await?;
        tx.commit().await?;
        Ok(done > 0)
    }

    async fn get_version(&self, version: &str) -> Result<Option<Arc<CompiledVersion>>> {
        let mut conn = self.backend.read().await?;
        self.load_version(&mut *conn, version).await
    }

    async fn get_version_file(&self, version: &str, path: &str) -> Result<Option<Vec<u8>>> {
        let row = self
            .backend
            .read()
            .await?
            .fetch_optional(
                Query::new(
                    "SELECT f.content FROM workflow_files w JOIN files f ON f.hash = w.hash \
                     WHERE w.version = $1 AND w.path = $2",
                )
                .bind(version)
                .bind(path),
            )
            .await?;
        row.map(|r| r.bytes("content")).transpose()
    }
}

#[async_trait]
impl<B: Backend> Runs for Store<B> {
    async fn create_run(&self, new: NewRun, now: DateTime<Utc>) -> Result<RunRecord> {
        let (run_id, told) = self
            .write("create_run", || self.create_run_tx(&new, now))
            .await?;
        self.notifier.committed(Changes::ALL, &told);
        self.get_run(&run_id)
            .await?
            .ok_or_else(|| Error::Corrupt(format!("run {run_id} vanished after insert")))
    }

    async fn get_run(&self, id: &str) -> Result<Option<RunRecord>> {
        self.read_optional(
            Query::new("SELECT * FROM runs WHERE id = $1").bind(id),
            run_record,
        )
        .await
    }

    async fn list_runs(&self, workflow: Option<&str>, limit: u32) -> Result<Vec<RunRecord>> {
        let limit = i64::from(if limit == 0 { 100 } else { limit });
        let query = match workflow {
            Some(w) => Query::new(
                "SELECT * FROM runs WHERE workflow = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
            )
            .bind(w)
            .bind(limit),
            None => Query::new("SELECT * FROM runs ORDER BY created_at DESC, id DESC LIMIT $1")
                .bind(limit),
        };
        let rows = self.backend.read().await?.fetch_all(query).await?;
        rows.iter().map(run_record).collect()
    }

    async fn list_task_runs(&self, run_id: &str) -> Result<Vec<TaskRunRecord>> {
        self.read_all(
                Query::new(format!(
                    "SELECT {TASK_RUN_COLUMNS} FROM task_runs WHERE run_id = $1 ORDER BY task_name, parallel_index"
                ))
                .bind(run_id),
            task_run_record,
        )
        .await
    }

    async fn get_task_run(&self, id: &str) -> Result<Option<TaskRunRecord>> {
        self.read_optional(
            Query::new(format!(
                "SELECT {TASK_RUN_COLUMNS} FROM task_runs WHERE id = $1"
            ))
            .bind(id),
            task_run_record,
        )
        .await
    }

    async fn get_task_runs(&self, ids: &[String]) -> Result<Vec<TaskRunRecord>> {
        self.read_by_ids(
            &format!("SELECT {TASK_RUN_COLUMNS} FROM task_runs WHERE id = ANY($1)"),
            ids,
            task_run_record,
        )
        .await
    }

    async fn list_attempts(&self, task_run_id: &str) -> Result<Vec<AttemptRecord>> {
        let mut attempts = self
            .read_all(
                Query::new("SELECT * FROM attempts WHERE task_run_id = $1 ORDER BY attempt")
                    .bind(task_run_id),
                attempt_record,
            )
            .await?;
        let rows = self
            .backend
            .read()
            .await?
            .fetch_all(
                Query::new(
                    "SELECT task_run_id, attempt, name, value FROM attempt_metrics WHERE task_run_id = $1",
                )
                .bind(task_run_id),
            )
            .await?;
        attach_metrics(&mut attempts, &rows)?;
        Ok(attempts)
    }

    async fn get_attempts(&self, task_run_ids: &[String]) -> Result<Vec<AttemptRecord>> {
        let mut attempts = self
            .read_by_ids(
                "SELECT * FROM attempts WHERE task_run_id = ANY($1) ORDER BY task_run_id, attempt",
                task_run_ids,
                attempt_record,
            )
            .await?;
        let mut rows = Vec::new();
        for chunk in task_run_ids.chunks(CHUNK) {
            rows.extend(
                self.backend
                    .read()
                    .await?
                    .fetch_all(
                        Query::new(
                            "SELECT task_run_id, attempt, name, value FROM attempt_metrics \
                             WHERE task_run_id = ANY($1)",
                        )
                        .bind(chunk),
                    )
                    .await?,
            );
        }
        attach_metrics(&mut attempts, &rows)?;
        Ok(attempts)
    }

    async fn log_sizes(&self, task_run_ids: &[String]) -> Result<Vec<LogSize>> {
        self.read_by_ids(
            "SELECT task_run_id, attempt, COUNT(*) AS lines, SUM(LENGTH(line)) AS bytes \
             FROM task_logs WHERE task_run_id = ANY($1) GROUP BY task_run_id, attempt",
            task_run_ids,
            |r| {
                Ok(LogSize {
                    task_run_id: r.text("task_run_id")?,
                    attempt: to_u32(r.int("attempt")?),
                    lines: u64::try_from(r.int("lines")?).unwrap_or(0),
                    bytes: u64::try_from(r.int("bytes")?).unwrap_or(0),
                })
            },
        )
        .await
    }

    async fn get_task_run_logs(&self, task_run_ids: &[String]) -> Result<Vec<LogRecord>> {
        let mut logs = self
            .read_by_ids(
                "SELECT l.id, l.task_run_id, t.task_name, t.parallel_index, l.attempt, l.stream, \
                 l.line, l.time FROM task_logs l JOIN task_runs t ON t.id = l.task_run_id \
                 WHERE l.task_run_id = ANY($1) ORDER BY l.id",
                task_run_ids,
                log_record,
            )
            .await?;
        // In order across chunks too.
        logs.sort_by_key(|l| l.id);
        Ok(logs)
    }

    async fn list_run_attempts(&self, run_id: &str) -> Result<Vec<AttemptRecord>> {
        let mut attempts = self
            .read_all(
                Query::new(
                    "SELECT a.* FROM attempts a JOIN task_runs t ON t.id = a.task_run_id \
                     WHERE t.run_id = $1 ORDER BY a.task_run_id, a.attempt",
                )
                .bind(run_id),
                attempt_record,
            )
            .await?;
        let rows = self
            .backend
            .read()
            .await?
            .fetch_all(
                Query::new(
                    "SELECT m.task_run_id, m.attempt, m.name, m.value FROM attempt_metrics m \
                     JOIN task_runs t ON t.id = m.task_run_id WHERE t.run_id = $1",
                )
                .bind(run_id),
            )
            .await?;
        attach_metrics(&mut attempts, &rows)?;
        Ok(attempts)
    }

    async fn cancel_run(&self, id: &str, now: DateTime<Utc>) -> Result<Vec<ActiveAttempt>> {
        let (active, told) = self
            .write("cancel_run", || self.cancel_run_once(id, now))
            .await?;
        self.notifier.committed(Changes::ALL, &told);
        Ok(active)
    }

    async fn retry_run(
        &self,
        id: &str,
        task: Option<&str>,
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let told = self
            .write("retry_run", || self.retry_run_once(id, task, owner, now))
            .await?;
        self.notifier.committed(Changes::ALL, &told);
        Ok(())
    }

    async fn get_logs(&self, query: &LogQuery) -> Result<Vec<LogRecord>> {
        let mut sql = String::from(
            "SELECT l.id, l.task_run_id, t.task_name, t.parallel_index, l.attempt, l.stream, l.line, l.time \
             FROM task_logs l JOIN task_runs t ON t.id = l.task_run_id WHERE l.run_id = $1 AND l.id > $2",
        );
        let mut args: Vec<Arg> = vec![query.run_id.as_str().into(), query.after_id.into()];
        if let Some(task) = &query.task {
            args.push(task.as_str().into());
            sql.push_str(&format!(" AND t.task_name = ${}", args.len()));
        }
        if let Some((task_run_id, attempt)) = &query.task_run_attempt {
            args.push(task_run_id.as_str().into());
            args.push((*attempt).into());
            sql.push_str(&format!(
                " AND l.task_run_id = ${} AND l.attempt = ${}",
                args.len() - 1,
                args.len()
            ));
        }
        args.push((if query.limit == 0 { 1000 } else { query.limit }).into());
        sql.push_str(&format!(" ORDER BY l.id LIMIT ${}", args.len()));
        let rows = self
            .backend
            .read()
            .await?
            .fetch_all(Query {
                sql: sql.into(),
                args,
            })
            .await?;
        rows.iter().map(log_record).collect()
    }
}

#[async_trait]
impl<B: Backend> Attempts for Store<B> {
    async fn attempt_spec(&self, fence: &Fence) -> Result<AttemptSpec> {
        let mut conn = self.backend.read().await?;
        let (current, row) = Self::current(&mut *conn, fence, false).await?;
        attempt::check(fence, &current, &attempt::ACTIVE).map_err(|r| refused(fence, r))?;
        let version = row.text("workflow_version")?;
        self.spec_in(&mut *conn, fence, &row, row.text("workflow")?, &version)
            .await
    }

    async fn report(
        &self,
        reports: &[(Fence, Report)],
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<()>>> {
        if reports.is_empty() {
            return Ok(Vec::new());
        }
        let reported = self
            .write("report", || self.report_once(reports, now))
            .await?;
        if reported.changed {
            // A start readies nothing and frees no capacity: a batch of
            // starts alone does not wake the dispatch loop (a launched
            // worker's StartTask would otherwise cost an empty claim, on
            // SQLite's one writer, while its task runs).
            let changes = Changes {
                work: reported.work,
                ..Changes::ALL
            };
            self.notifier.committed(changes, &reported.told);
        }
        Ok(reported.answers)
    }

    async fn heartbeats(&self, beats: &[Fence], now: DateTime<Utc>) -> Result<Vec<Result<bool>>> {
        let mut ids: Vec<String> = beats.iter().map(|f| f.task_run_id.clone()).collect();
        ids.sort();
        ids.dedup();
        let mut current: HashMap<String, Current> = HashMap::with_capacity(ids.len());
        let mut conn = self.backend.read().await?;
        for chunk in ids.chunks(CHUNK) {
            for r in conn
                .fetch_all(
                    Query::new(
                        "SELECT id, status, attempt, token FROM task_runs WHERE id = ANY($1)",
                    )
                    .bind(chunk),
                )
                .await?
            {
                current.insert(
                    r.text("id")?,
                    Current {
                        status: task_status(&r.text("status")?)?,
                        attempt: to_u32(r.int("attempt")?),
                        token: r.opt_text("token")?,
                        attempt_base: 0,
                        lost_count: 0,
                        ready_at: None,
                        reported: None,
                    },
                );
            }
        }
        drop(conn);
        Ok(beats
            .iter()
            .map(|fence| {
                let current = current
                    .get(&fence.task_run_id)
                    .ok_or_else(|| Error::NotFound {
                        what: format!("task run {}", fence.task_run_id),
                    })?;
                let cancelled =
                    attempt::heartbeat(fence, current).map_err(|r| refused(fence, r))?;
                if !cancelled {
                    self.beat(fence, now);
                }
                Ok(cancelled)
            })
            .collect())
    }

    async fn flush_heartbeats(&self) -> Result<()> {
        let beats = std::mem::take(&mut *self.beats.lock().unwrap_or_else(|e| e.into_inner()));
        if beats.is_empty() {
            return Ok(());
        }
        // In id order, like every other writer of task runs: no deadlocks.
        let mut beats: Vec<(String, (u32, i64))> = beats.into_iter().collect();
        beats.sort();
        let written = self.write("flush_heartbeats", || async {
            let mut tx = self.backend.begin().await?;
            for chunk in beats.chunks(CHUNK) {
                // A beat only moves `heartbeat_at` forward, and only for the
                // attempt it was sent for while it is active.
                tx.execute(Query::values(
                    "UPDATE task_runs SET heartbeat_at = CASE WHEN COALESCE(task_runs.heartbeat_at, 0) < v.column3 \
                     THEN v.column3 ELSE task_runs.heartbeat_at END FROM (VALUES ",
                    chunk,
                    3,
                    ") AS v WHERE task_runs.id = v.column1 AND task_runs.attempt = v.column2 \
                     AND task_runs.status IN ('dispatched', 'running')",
                    |(id, (attempt, at)), args| {
                        args.push(id.into());
                        args.push((*attempt).into());
                        args.push((*at).into());
                    },
                ))
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await;
        if written.is_err() {
            // Keep the beats for the next flush (newer ones win).
            let mut kept = self.beats.lock().unwrap_or_else(|e| e.into_inner());
            for (id, beat) in beats {
                kept.entry(id).or_insert(beat);
            }
        }
        written
    }

    async fn append_logs(&self, fence: &Fence, lines: &[NewLogLine]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let appended = self.write("append_logs", || async {
            let mut tx = self.backend.begin().await?;
            let (current, row) = Self::current(&mut *tx, fence, true).await?;
            attempt::accepts_logs(fence, &current).map_err(|r| refused(fence, r))?;
            let run_id = row.text("run_id")?;
            for chunk in lines.chunks(CHUNK) {
                tx.execute(Query::values(
                    "INSERT INTO task_logs (run_id, task_run_id, attempt, stream, line, time) VALUES ",
                    chunk,
                    6,
                    "",
                    |l, args| {
                        args.push(run_id.as_str().into());
                        args.push(fence.task_run_id.as_str().into());
                        args.push(fence.attempt.into());
                        args.push(l.stream.as_str().into());
                        args.push(l.line.as_str().into());
                        args.push(ms(l.time).into());
                    },
                ))
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await;
        if appended.is_ok() {
            self.notifier.fire(Changes::VIEWS);
        }
        appended
    }

    async fn check_output(&self, fence: &Fence, output: &Value) -> Result<()> {
        let mut conn = self.backend.read().await?;
        let (_, row) = Self::current(&mut *conn, fence, false).await?;
        let version = self
            .version_in(&mut *conn, &row.text("workflow_version")?)
            .await?;
        if let Some(def) = version.task(&row.text("task_name")?) {
            ork_domain::types::validate_output(def, &version.definition, output)
                .map_err(Error::InvalidOutput)?;
        }
        Ok(())
    }
}

#[async_trait]
impl<B: Backend> Scheduling for Store<B> {
    async fn acquire_runs(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<String>> {
        let taken: Vec<String> = self
            .write("acquire_runs", || async {
                let mut tx = self.backend.begin().await?;
                // Unowned (never owned, or released) and expired runs; runs a
                // report is advancing right now are left for the next round.
                let rows = tx
                    .fetch_all(
                        Query::new(
                            "UPDATE runs SET owner = $1, lease_expires = $2 WHERE id IN ( \
                             SELECT id FROM runs WHERE status IN ('pending', 'running') \
                             AND (owner IS NULL OR lease_expires IS NULL OR lease_expires < $3) \
                             ORDER BY created_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) \
                         RETURNING id",
                        )
                        .bind(owner)
                        .bind(ms(now) + self.lease_ms())
                        .bind(ms(now))
                        .bind(limit),
                    )
                    .await?;
                tx.commit().await?;
                rows.iter().map(|r| r.text("id")).collect()
            })
            .await?;
        if !taken.is_empty() {
            self.notifier.fire(Changes::WORK);
        }
        Ok(taken)
    }

    async fn renew_leases(&self, owner: &str, now: DateTime<Utc>) -> Result<u64> {
        self.write("renew_leases", || async {
            let mut tx = self.backend.begin().await?;
            let done = tx
                .execute(
                    Query::new(
                        "UPDATE runs SET lease_expires = $2 WHERE owner = $1 \
                         AND status IN ('pending', 'running') AND lease_expires >= $3",
                    )
                    .bind(owner)
                    .bind(ms(now) + self.lease_ms())
                    .bind(ms(now)),
                )
                .await?;
            tx.commit().await?;
            Ok(done)
        })
        .await
    }

    async fn release_leases(&self, owner: &str) -> Result<()> {
        self.write("release_leases", || async {
            let mut tx = self.backend.begin().await?;
            tx.execute(
                Query::new("UPDATE runs SET owner = NULL, lease_expires = NULL WHERE owner = $1")
                    .bind(owner),
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn claim_ready(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        limit: u32,
        capacity: &Capacity,
    ) -> Result<Vec<Claim>> {
        let (claims, told) = self
            .write("claim_ready", || {
                self.claim_once(owner, now, limit, capacity)
            })
            .await?;
        if !claims.is_empty() {
            self.notifier.committed(Changes::OUTBOX, &told);
        }
        Ok(claims)
    }

    async fn release_claim(&self, fence: &Fence) -> Result<bool> {
        let released = self
            .write("release_claim", || self.release_claim_once(fence))
            .await?;
        if released {
            self.notifier.fire(Changes::WORK);
        }
        Ok(released)
    }

    async fn expired_attempts(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        heartbeat_timeout: std::time::Duration,
    ) -> Result<Vec<ExpiredAttempt>> {
        self.flush_heartbeats().await?;
        let silent_since = ms(now).saturating_sub(duration_ms(heartbeat_timeout));
        self.read_all(
            Query::new(
                "SELECT id, attempt, token, executor, timeout_seconds, deadline_at FROM task_runs \
                 WHERE status IN ('dispatched', 'running') AND (deadline_at <= $1 OR heartbeat_at <= $2) \
                 AND run_id IN (SELECT id FROM runs WHERE owner = $3 AND lease_expires >= $1)",
            )
            .bind(ms(now))
            .bind(silent_since)
            .bind(owner),
            |r| {
                Ok(ExpiredAttempt {
                    fence: current_fence(r)?,
                    executor: r.text("executor")?,
                    kind: attempt::expiry(opt_ms(r.opt_int("deadline_at")?), now),
                    timeout_seconds: to_u32(r.int("timeout_seconds")?),
                })
            },
        )
        .await
    }

    async fn recover(&self, owner: &str, now: DateTime<Utc>) -> Result<u64> {
        self.write("recover", || async {
            let mut tx = self.backend.begin().await?;
            let done = tx
                .execute(
                    Query::new(
                        "UPDATE task_runs SET heartbeat_at = $1 WHERE status IN ('dispatched', 'running') \
                         AND run_id IN (SELECT id FROM runs WHERE owner = $2)",
                    )
                    .bind(ms(now))
                    .bind(owner),
                )
                .await?;
            tx.commit().await?;
            Ok(done)
        })
        .await
    }

    async fn queue_stats(&self, owner: &str, now: DateTime<Utc>) -> Result<QueueStats> {
        let count = |r: &RowOf<B>, column: &str| -> Result<u64> {
            Ok(u64::try_from(r.int(column)?).unwrap_or(0))
        };
        let mut conn = self.backend.read().await?;
        // Unfinished task runs by where they stand (an index holds only them).
        let tasks = conn
            .fetch_optional(
                Query::new(
                    "SELECT \
                     COALESCE(SUM(CASE WHEN status = 'pending' AND ready_at IS NULL THEN 1 ELSE 0 END), 0) AS upstream, \
                     COALESCE(SUM(CASE WHEN status = 'pending' AND ready_at > $1 THEN 1 ELSE 0 END), 0) AS delayed, \
                     COALESCE(SUM(CASE WHEN status = 'pending' AND ready_at <= $1 THEN 1 ELSE 0 END), 0) AS ready, \
                     COALESCE(SUM(CASE WHEN status = 'dispatched' THEN 1 ELSE 0 END), 0) AS dispatched, \
                     COALESCE(SUM(CASE WHEN status = 'running' THEN 1 ELSE 0 END), 0) AS running \
                     FROM task_runs WHERE status IN ('pending', 'dispatched', 'running')",
                )
                .bind(ms(now)),
            )
            .await?
            .ok_or_else(|| Error::Corrupt("a count returned no row".to_owned()))?;
        let runs = conn
            .fetch_optional(
                Query::new(
                    "SELECT \
                     COALESCE(SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END), 0) AS pending, \
                     COALESCE(SUM(CASE WHEN status = 'running' THEN 1 ELSE 0 END), 0) AS running, \
                     COALESCE(SUM(CASE WHEN owner = $1 AND lease_expires >= $2 THEN 1 ELSE 0 END), 0) AS leased \
                     FROM runs WHERE status IN ('pending', 'running')",
                )
                .bind(owner)
                .bind(ms(now)),
            )
            .await?
            .ok_or_else(|| Error::Corrupt("a count returned no row".to_owned()))?;
        let outbox = conn
            .fetch_optional(Query::new("SELECT COUNT(*) AS n FROM outbox"))
            .await?
            .ok_or_else(|| Error::Corrupt("a count returned no row".to_owned()))?;
        Ok(QueueStats {
            waiting_upstream: count(&tasks, "upstream")?,
            retry_delay: count(&tasks, "delayed")?,
            ready: count(&tasks, "ready")?,
            dispatched: count(&tasks, "dispatched")?,
            running: count(&tasks, "running")?,
            runs_pending: count(&runs, "pending")?,
            runs_running: count(&runs, "running")?,
            outbox: count(&outbox, "n")?,
            leased_runs: count(&runs, "leased")?,
        })
    }

    async fn promote_pending_runs(&self, owner: &str, now: DateTime<Utc>) -> Result<u32> {
        let waiting = self
            .backend
            .read()
            .await?
            .fetch_all(
                Query::new(
                    "SELECT id, workflow, workflow_version FROM runs WHERE status = 'pending' AND owner = $1 \
                     ORDER BY created_at, id",
                )
                .bind(owner),
            )
            .await?;
        let mut promoted = 0;
        for row in &waiting {
            let (id, workflow, version) = (
                row.text("id")?,
                row.text("workflow")?,
                row.text("workflow_version")?,
            );
            let (started, told) = self
                .write("promote_pending_run", || {
                    self.promote_once(&id, &workflow, &version, now)
                })
                .await?;
            if started {
                promoted += 1;
                self.notifier.committed(Changes::ALL, &told);
            }
        }
        Ok(promoted)
    }

    async fn wakeups(&self, owner: &str) -> Result<Option<BoxStream<'static, ()>>> {
        self.backend.wakeups(owner).await
    }

    async fn next_ready_at(&self) -> Result<Option<DateTime<Utc>>> {
        let row = self
            .backend
            .read()
            .await?
            .fetch_optional(Query::new(
                "SELECT MIN(ready_at) AS next FROM task_runs WHERE status = 'pending' AND ready_at IS NOT NULL",
            ))
            .await?;
        Ok(opt_ms(
            row.map(|r| r.opt_int("next")).transpose()?.flatten(),
        ))
    }

    async fn waiting_pool_tasks(
        &self,
        owner: &str,
        ready_before: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(String, String)>> {
        self.read_all(
            Query::new(
                "SELECT id, handler FROM task_runs WHERE status = 'pending' AND executor = 'workers' \
                 AND ready_at IS NOT NULL AND ready_at <= $1 \
                 AND run_id IN (SELECT id FROM runs WHERE owner = $2 AND lease_expires >= $3) \
                 ORDER BY ready_at LIMIT $4",
            )
            .bind(ms(ready_before))
            .bind(owner)
            .bind(ms(now))
            .bind(limit),
            |r| Ok((r.text("id")?, r.opt_text("handler")?.unwrap_or_default())),
        )
        .await
    }

    async fn fail_pending(
        &self,
        task_run_id: &str,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let (failed, told) = self
            .write("fail_pending", || {
                self.fail_pending_once(task_run_id, error, now)
            })
            .await?;
        if failed {
            self.notifier.committed(Changes::ALL, &told);
        }
        Ok(failed)
    }

    async fn scheduled_workflows(&self) -> Result<Vec<(WorkflowRecord, Option<DateTime<Utc>>)>> {
        let rows = self
            .backend
            .read()
            .await?
            .fetch_all(Query::new(
                "SELECT w.*, (SELECT MAX(fire_time) FROM schedule_fires f WHERE f.workflow = w.name) AS last_fire \
                 FROM workflows w ORDER BY w.name",
            ))
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
        match self
            .write("fire_schedule", || {
                self.fire_schedule_once(workflow, fire_time, owner, now)
            })
            .await?
        {
            Some((run_id, told)) => {
                self.notifier.committed(Changes::ALL, &told);
                self.get_run(&run_id).await
            }
            None => Ok(None),
        }
    }
}

#[async_trait]
impl<B: Backend> Outbox for Store<B> {
    async fn outbox_claim(
        &self,
        owner: &str,
        limit: u32,
        now: DateTime<Utc>,
        lease: std::time::Duration,
    ) -> Result<Vec<OutboxEntry>> {
        let mut claimed: Vec<OutboxEntry> = self.write("outbox_claim", || async {
            let mut tx = self.backend.begin().await?;
            let rows = tx
                .fetch_all(
                    Query::new(
                        "UPDATE outbox SET claimed_by = $1, claimed_until = $2 WHERE id IN ( \
                             SELECT id FROM outbox \
                             WHERE (claimed_until IS NULL OR claimed_until < $3 OR claimed_by = $1) \
                             AND key NOT IN (SELECT key FROM outbox \
                                 WHERE claimed_until >= $3 AND claimed_by <> $1) \
                             ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED) \
                         RETURNING id, kind, key, attempt",
                    )
                    .bind(owner)
                    .bind(ms(now) + duration_ms(lease))
                    .bind(ms(now))
                    .bind(limit),
                )
                .await?;
            tx.commit().await?;
            rows.iter().map(outbox_entry).collect()
        })
        .await?;
        claimed.sort_by_key(|e| e.id);
        Ok(claimed)
    }

    async fn outbox_ack(&self, ids: &[i64]) -> Result<()> {
        let mut tx = self.backend.begin().await?;
        for chunk in ids.chunks(CHUNK) {
            tx.execute(Query::new("DELETE FROM outbox WHERE id = ANY($1)").bind(chunk.to_vec()))
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

impl<B: Backend> StateStore for Store<B> {
    fn set_output_store(&self, outputs: Arc<dyn OutputStore>) {
        let _ = self.outputs.set(outputs);
    }

    fn notifier(&self) -> Notifier {
        self.notifier.clone()
    }

    fn writers(&self) -> usize {
        B::WRITERS
    }
}
