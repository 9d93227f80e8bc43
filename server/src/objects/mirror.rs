//! The mirror loop: drains the state store's outbox into the object store.
//!
//! Entries name *what* changed, never the content: the loop reads the
//! committed state and writes it, so a replayed entry (after a crash between
//! write and acknowledge) rewrites the same objects and nothing is lost.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use ork_domain::EnvValue;
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::Error;
use super::layout::{self, AttemptFile, AttemptSpec, AttemptStatus};
use crate::api::convert;
use crate::state::{LogQuery, OutboxEntry, OutboxKind, StateStore, TaskRunRecord};

const BATCH: u32 = 1024;
/// Safety net for wake-ups lost to a race; normal latency comes from `wake`.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// After a batch, the mirror waits this long before reading the next one,
/// so that under load the several entries of one attempt (dispatched,
/// started, finished) land in one batch and are written once: each write
/// creates files, which costs more than the wait delays the mirror.
const LINGER: Duration = Duration::from_millis(100);

/// Cheap handle to nudge the mirror after a commit.
#[derive(Clone, Default)]
pub struct MirrorHandle {
    wake: Arc<Notify>,
}

impl MirrorHandle {
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// The mirror component.
pub struct Mirror {
    state: Arc<dyn StateStore>,
    objects: Arc<dyn ObjectStore>,
    handle: MirrorHandle,
}

impl Mirror {
    pub fn new(state: Arc<dyn StateStore>, objects: Arc<dyn ObjectStore>) -> Self {
        Self {
            state,
            objects,
            handle: MirrorHandle::default(),
        }
    }

    pub fn handle(&self) -> MirrorHandle {
        self.handle.clone()
    }

    /// Drains the outbox until `shutdown` fires, then drains once more so a
    /// clean stop leaves the mirror complete.
    pub async fn run(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.drain_once().await {
                Ok(0) => {
                    backoff = Duration::from_millis(100);
                    tokio::select! {
                        _ = self.handle.wake.notified() => {}
                        _ = tokio::time::sleep(IDLE_POLL) => {}
                        _ = shutdown.changed() => break,
                    }
                }
                Ok(_) => {
                    backoff = Duration::from_millis(100);
                    tokio::select! {
                        _ = tokio::time::sleep(LINGER) => {}
                        _ = shutdown.changed() => break,
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "mirror: will retry in {backoff:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        while let Ok(n) = self.drain_once().await {
            if n == 0 {
                break;
            }
        }
    }

    /// Mirrors one batch of the outbox; returns how many entries it handled.
    pub async fn drain_once(&self) -> Result<usize, Error> {
        let batch = self.state.outbox_batch(BATCH).await?;
        if batch.is_empty() {
            return Ok(0);
        }
        let mut seen = HashSet::new();
        for entry in &batch {
            if seen.insert((entry.kind.clone(), entry.key.clone(), entry.attempt)) {
                self.mirror(entry).await?;
            }
        }
        let ids: Vec<i64> = batch.iter().map(|e| e.id).collect();
        self.state.outbox_ack(&ids).await?;
        Ok(batch.len())
    }

    async fn mirror(&self, entry: &OutboxEntry) -> Result<(), Error> {
        match entry.kind {
            OutboxKind::Workflow => self.mirror_workflow(&entry.key).await,
            OutboxKind::Run => self.mirror_run(&entry.key).await,
            OutboxKind::Attempt => match entry.attempt {
                Some(attempt) => self.mirror_attempt(&entry.key, attempt).await,
                None => Ok(()),
            },
        }
    }

    async fn put(&self, path: &Path, bytes: Vec<u8>) -> Result<(), Error> {
        self.objects.put(path, PutPayload::from(bytes)).await?;
        Ok(())
    }

    async fn put_json(&self, path: &Path, value: &impl serde::Serialize) -> Result<(), Error> {
        let bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
        self.put(path, bytes).await
    }

    async fn mirror_workflow(&self, version: &str) -> Result<(), Error> {
        let Some(compiled) = self.state.get_version(version).await? else {
            return Ok(());
        };
        let name = compiled.definition.name.clone();
        self.put(
            &layout::workflow_yaml(&name, version)?,
            compiled.yaml.clone().into_bytes(),
        )
        .await?;
        for file in ork_domain::parse::referenced_files(&compiled.definition) {
            if let Some(content) = self.state.get_version_file(version, &file).await? {
                self.put(&layout::workflow_file(&name, version, &file)?, content)
                    .await?;
            }
        }
        Ok(())
    }

    /// `run.json` is the run as `GetRun` shows it (an `ork.v1.Run` in proto3
    /// JSON) at the time of its last run-level change; the reader refreshes
    /// each task from its attempts, which are mirrored on every change.
    async fn mirror_run(&self, run_id: &str) -> Result<(), Error> {
        let Some(run) = self.state.get_run(run_id).await? else {
            return Ok(());
        };
        let tasks = self.state.list_task_runs(run_id).await?;
        let version = self.state.get_version(&run.workflow_version).await?;
        let version = version.as_deref();
        let position = |name: &str| {
            version
                .and_then(|v| v.definition.tasks.iter().position(|t| t.name == name))
                .unwrap_or(usize::MAX)
        };
        let mut sorted: Vec<&TaskRunRecord> = tasks.iter().collect();
        sorted.sort_by_key(|r| {
            (
                position(&r.task_name),
                r.task_name.clone(),
                r.parallel_index,
            )
        });
        let now = chrono::Utc::now();
        let counts = convert::RunCounts::new(&tasks);
        let task_runs = sorted
            .into_iter()
            .map(|r| {
                let context = convert::ReasonContext {
                    version,
                    now,
                    run_waiting: run.status == ork_domain::RunStatus::Pending,
                    dispatch: None,
                };
                convert::task_run(r, convert::pending_reason(r, &counts, &context))
            })
            .collect();
        self.put_json(&layout::run_doc(run_id)?, &convert::run(&run, task_runs))
            .await
    }

    async fn mirror_attempt(&self, task_run_id: &str, attempt: u32) -> Result<(), Error> {
        let Some(task) = self.state.get_task_run(task_run_id).await? else {
            return Ok(());
        };
        let attempts = self.state.list_attempts(task_run_id).await?;
        let Some(record) = attempts.iter().find(|a| a.attempt == attempt) else {
            return Ok(());
        };
        let run = self.state.get_run(&task.run_id).await?;
        let version = match &run {
            Some(run) => self.state.get_version(&run.workflow_version).await?,
            None => None,
        };
        let definition = version
            .as_ref()
            .and_then(|v| v.task(&task.task_name).cloned());
        let key = |file| {
            layout::attempt_file(
                &task.run_id,
                &task.task_name,
                task.parallel_index,
                attempt,
                file,
            )
        };

        let spec = AttemptSpec {
            run_id: task.run_id.clone(),
            task: task.task_name.clone(),
            task_run_id: task.id.clone(),
            attempt,
            parallel_index: task.parallel_index,
            parallel_count: task.parallel_count,
            executor: task.executor.clone(),
            input: task.input.clone(),
            file: definition.as_ref().and_then(|d| d.file.clone()),
            timeout_seconds: definition.as_ref().map(|d| d.timeout_seconds),
            env: definition.as_ref().map(|d| redacted_env(&d.env)),
        };
        self.put_json(&key(AttemptFile::Spec)?, &spec).await?;
        let status = AttemptStatus {
            status: record.status.as_str().to_owned(),
            error: record.error.clone(),
            dispatched_at: record.dispatched_at,
            started_at: record.started_at,
            finished_at: record.finished_at,
            metrics: record
                .metrics
                .iter()
                .map(|m| (m.name.clone(), m.value))
                .collect(),
        };
        self.put_json(&key(AttemptFile::Status)?, &status).await?;
        if record.status == ork_domain::TaskStatus::Success {
            self.put_json(
                &key(AttemptFile::Output)?,
                task.output.as_ref().unwrap_or(&Value::Null),
            )
            .await?;
        }
        if record.status.is_terminal() {
            let log = self.attempt_log(&task.run_id, task_run_id, attempt).await?;
            self.put(&key(AttemptFile::Log)?, log.into_bytes()).await?;
        }
        Ok(())
    }

    async fn attempt_log(
        &self,
        run_id: &str,
        task_run_id: &str,
        attempt: u32,
    ) -> Result<String, Error> {
        let mut text = String::new();
        let mut after_id = 0;
        loop {
            let lines = self
                .state
                .get_logs(&LogQuery {
                    run_id: run_id.to_owned(),
                    task: None,
                    task_run_attempt: Some((task_run_id.to_owned(), attempt)),
                    after_id,
                    limit: 5000,
                })
                .await?;
            let Some(last) = lines.last() else { break };
            after_id = last.id;
            for l in &lines {
                text.push_str(&l.line);
                text.push('\n');
            }
        }
        Ok(text)
    }
}

/// Literal env values are kept; secrets and host variables are named, never
/// resolved, so the mirror can't leak them.
fn redacted_env(env: &std::collections::BTreeMap<String, EnvValue>) -> Value {
    let map = env
        .iter()
        .map(|(k, v)| {
            let shown = match v {
                EnvValue::Literal(s) => json!(s),
                EnvValue::Secret(name) => json!({ "secret": name }),
                EnvValue::FromEnv(name) => json!({ "from_env": name }),
            };
            (k.clone(), shown)
        })
        .collect();
    Value::Object(map)
}
