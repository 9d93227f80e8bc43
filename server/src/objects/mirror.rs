//! The mirror loop: drains the state store's outbox into the object store.
//!
//! Entries name *what* changed, never the content: the loop reads the
//! committed state and writes it, so a replayed entry (after a crash between
//! write and acknowledge) rewrites the same state and nothing is lost.
//!
//! Each replica's mirror claims its own share of the outbox (a run is copied
//! by one mirror at a time). A pass copies a batch: each workflow version
//! that changed, each run whose run-level state changed (`run.json`), and the
//! attempts that changed, one object per run (a segment) rather than files
//! per attempt, so a fan-out of thousands of attempts costs a handful of
//! writes. Reading a batch takes a few queries, whatever its size.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use ork_domain::EnvValue;
use serde_json::{Value, json};

use super::Error;
use super::layout::{self, AttemptEntry, AttemptFile, AttemptSegment, AttemptSpec, AttemptStatus};
use crate::notify::Notifier;
use crate::state::{CompiledVersion, LogQuery, OutboxEntry, OutboxKind, StateStore, TaskRunRecord};
use crate::views;

const BATCH: u32 = 1024;
/// Safety net for wake-ups lost to a race; normal latency comes from the
/// notifier.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// After a batch, the mirror waits this long before reading the next one,
/// so that under load the several entries of one attempt (dispatched,
/// started, finished) land in one batch and are written once.
const LINGER: Duration = Duration::from_millis(100);
/// How long a claim on outbox entries lasts: a mirror that died holding some
/// leaves them to another after this.
const CLAIM: Duration = Duration::from_secs(60);
/// Logs up to this size go inline in their segment; a larger one gets its
/// own `log.txt`, read in pages.
const INLINE_LOG_BYTES: u64 = 16 * 1024;

/// The mirror component.
pub struct Mirror {
    state: Arc<dyn StateStore>,
    objects: Arc<dyn ObjectStore>,
    /// Wakes the loop when outbox rows commit.
    notifier: Notifier,
    /// Who claims outbox entries: this replica.
    owner: String,
}

impl Mirror {
    pub fn new(state: Arc<dyn StateStore>, objects: Arc<dyn ObjectStore>) -> Self {
        Self {
            notifier: state.notifier(),
            state,
            objects,
            owner: "mirror".to_owned(),
        }
    }

    /// Claims outbox entries as `owner` (the replica's name).
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
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
                        _ = self.notifier.outbox() => {}
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
        let batch = self
            .state
            .outbox_claim(&self.owner, BATCH, chrono::Utc::now(), CLAIM)
            .await?;
        if batch.is_empty() {
            return Ok(0);
        }
        let mut workflows = BTreeSet::new();
        let mut runs = BTreeSet::new();
        // Attempts that changed, by task run, with the first entry that
        // names each task run (segments are named after it).
        let mut attempts: BTreeMap<String, (i64, BTreeSet<u32>)> = BTreeMap::new();
        for entry in &batch {
            match (&entry.kind, entry.attempt) {
                (OutboxKind::Workflow, _) => {
                    workflows.insert(entry.key.clone());
                }
                (OutboxKind::Run, _) => {
                    runs.insert(entry.key.clone());
                }
                (OutboxKind::Attempt, Some(attempt)) => {
                    attempts
                        .entry(entry.key.clone())
                        .or_insert((entry.id, BTreeSet::new()))
                        .1
                        .insert(attempt);
                }
                (OutboxKind::Attempt, None) => {}
            }
        }
        for version in &workflows {
            self.mirror_workflow(version).await?;
        }
        self.mirror_attempts(&attempts).await?;
        for run in &runs {
            self.mirror_run(run).await?;
        }
        let ids: Vec<i64> = batch.iter().map(|e: &OutboxEntry| e.id).collect();
        self.state.outbox_ack(&ids).await?;
        Ok(batch.len())
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
        let context = views::ReasonContext {
            version: version.as_deref(),
            now: chrono::Utc::now(),
            run_waiting: run.status == ork_domain::RunStatus::Pending,
            dispatch: None,
        };
        let task_runs = views::task_runs(&tasks, &[], &context);
        self.put_json(&layout::run_doc(run_id)?, &views::run(&run, task_runs))
            .await
    }

    /// Writes the changed attempts of a batch: one segment per run, each
    /// attempt as it stands now.
    async fn mirror_attempts(
        &self,
        changed: &BTreeMap<String, (i64, BTreeSet<u32>)>,
    ) -> Result<(), Error> {
        if changed.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = changed.keys().cloned().collect();
        let tasks = self.state.get_task_runs(&ids).await?;
        let mut records: HashMap<(String, u32), crate::state::AttemptRecord> = self
            .state
            .get_attempts(&ids)
            .await?
            .into_iter()
            .map(|a| ((a.task_run_id.clone(), a.attempt), a))
            .collect();
        let logs = self.small_logs(&ids, &records).await?;
        let mut versions: HashMap<String, Option<Arc<CompiledVersion>>> = HashMap::new();
        let mut segments: BTreeMap<String, (i64, Vec<AttemptEntry>)> = BTreeMap::new();
        for task in &tasks {
            let Some((first, attempts)) = changed.get(&task.id) else {
                continue;
            };
            let version = match versions.get(&task.run_id) {
                Some(v) => v.clone(),
                None => {
                    let run = self.state.get_run(&task.run_id).await?;
                    let v = match run {
                        Some(run) => self.state.get_version(&run.workflow_version).await?,
                        None => None,
                    };
                    versions.insert(task.run_id.clone(), v.clone());
                    v
                }
            };
            for &attempt in attempts {
                let Some(record) = records.remove(&(task.id.clone(), attempt)) else {
                    continue; // released before it was launched
                };
                let log = if record.status.is_terminal() {
                    match logs.get(&(task.id.clone(), attempt)) {
                        Some(Some(text)) => Some(text.clone()),
                        Some(None) => {
                            // Too large to inline: its own object, in pages.
                            let text = self.attempt_log(&task.run_id, &task.id, attempt).await?;
                            let key = layout::attempt_file(
                                &task.run_id,
                                &task.task_name,
                                task.parallel_index,
                                attempt,
                                AttemptFile::Log,
                            )?;
                            self.put(&key, text.into_bytes()).await?;
                            None
                        }
                        None => Some(String::new()),
                    }
                } else {
                    None
                };
                let entry = attempt_entry(task, &record, version.as_deref(), log);
                let segment = segments
                    .entry(task.run_id.clone())
                    .or_insert((*first, Vec::new()));
                segment.0 = segment.0.min(*first);
                segment.1.push(entry);
            }
        }
        for (run_id, (first, attempts)) in segments {
            self.put_json(
                &layout::attempt_segment(&run_id, first)?,
                &AttemptSegment { attempts },
            )
            .await?;
        }
        Ok(())
    }

    /// The logs of the ended attempts among `records`, read in one query when
    /// small: `Some(text)` inline, `None` for a log too large to inline.
    /// Attempts without any log line are left out.
    async fn small_logs(
        &self,
        ids: &[String],
        records: &HashMap<(String, u32), crate::state::AttemptRecord>,
    ) -> Result<HashMap<(String, u32), Option<String>>, Error> {
        let sizes = self.state.log_sizes(ids).await?;
        let mut logs: HashMap<(String, u32), Option<String>> = HashMap::new();
        let mut small = BTreeSet::new();
        for size in sizes {
            let key = (size.task_run_id.clone(), size.attempt);
            if !records.get(&key).is_some_and(|r| r.status.is_terminal()) {
                continue;
            }
            if size.bytes + size.lines <= INLINE_LOG_BYTES {
                small.insert(size.task_run_id.clone());
                logs.insert(key, Some(String::new()));
            } else {
                logs.insert(key, None);
            }
        }
        if small.is_empty() {
            return Ok(logs);
        }
        let small: Vec<String> = small.into_iter().collect();
        for line in self.state.get_task_run_logs(&small).await? {
            if let Some(Some(text)) = logs.get_mut(&(line.task_run_id.clone(), line.attempt)) {
                text.push_str(&line.line);
                text.push('\n');
            }
        }
        Ok(logs)
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

/// One attempt as its segment holds it.
fn attempt_entry(
    task: &TaskRunRecord,
    record: &crate::state::AttemptRecord,
    version: Option<&CompiledVersion>,
    log: Option<String>,
) -> AttemptEntry {
    let definition = version.and_then(|v| v.task(&task.task_name));
    AttemptEntry {
        task: task.task_name.clone(),
        parallel_index: task.parallel_index,
        attempt: record.attempt,
        spec: AttemptSpec {
            run_id: task.run_id.clone(),
            task: task.task_name.clone(),
            task_run_id: task.id.clone(),
            attempt: record.attempt,
            parallel_index: task.parallel_index,
            parallel_count: task.parallel_count,
            executor: task.executor.clone(),
            input: task.input.clone(),
            file: definition.and_then(|d| d.file.clone()),
            timeout_seconds: definition.map(|d| d.timeout_seconds),
            env: definition.map(|d| redacted_env(&d.env)),
        },
        status: AttemptStatus {
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
        },
        output: (record.status == ork_domain::TaskStatus::Success)
            .then(|| task.output.clone().unwrap_or(Value::Null)),
        log,
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
