//! Reads a run back from the bucket alone, without a server or a database:
//! the typed documents of each attempt, and the run in the shape `GetRun`
//! returns (`ork.v1.Run`).

use std::collections::BTreeMap;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use ork_proto::json::to_proto;
use ork_proto::v1;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Error;
use super::layout::{self, AttemptFile, AttemptSpec, AttemptStatus};

/// Everything the mirror holds about one attempt. A file the mirror has not
/// written (yet) is `None`: `output` exists only for a success, `log` only
/// once the attempt has finished.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub task: String,
    pub parallel_index: Option<u32>,
    pub attempt: u32,
    pub spec: Option<AttemptSpec>,
    pub status: Option<AttemptStatus>,
    pub output: Option<Value>,
    pub log: Option<String>,
}

/// Reads one object; `None` when it does not exist.
async fn get(store: &dyn ObjectStore, path: &Path) -> Result<Option<Vec<u8>>, Error> {
    match store.get(path).await {
        Ok(result) => Ok(Some(result.bytes().await?.to_vec())),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn get_json<T: DeserializeOwned>(
    store: &dyn ObjectStore,
    path: &Path,
) -> Result<Option<T>, Error> {
    let Some(bytes) = get(store, path).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::Corrupt {
            path: path.to_string(),
            message: e.to_string(),
        })
}

/// Every attempt of a run the mirror holds, ordered by task folder, then attempt.
pub async fn read_run_attempts(
    store: &dyn ObjectStore,
    run_id: &str,
) -> Result<Vec<AttemptRecord>, Error> {
    let prefix = layout::run_tasks(run_id)?;
    let keys: Vec<_> = store
        .list(Some(&prefix))
        .map_ok(|meta| meta.location)
        .try_collect()
        .await?;
    let mut found: BTreeMap<(String, Option<u32>, u32), Vec<AttemptFile>> = BTreeMap::new();
    for key in keys
        .iter()
        .filter_map(|k| layout::parse_attempt_key(run_id, k))
    {
        found
            .entry((key.task, key.parallel_index, key.attempt))
            .or_default()
            .push(key.file);
    }
    let mut records = Vec::with_capacity(found.len());
    for ((task, parallel_index, attempt), files) in found {
        let path = |file| layout::attempt_file(run_id, &task, parallel_index, attempt, file);
        let has = |file| files.contains(&file);
        let spec = if has(AttemptFile::Spec) {
            get_json(store, &path(AttemptFile::Spec)?).await?
        } else {
            None
        };
        let status = if has(AttemptFile::Status) {
            get_json(store, &path(AttemptFile::Status)?).await?
        } else {
            None
        };
        let output = if has(AttemptFile::Output) {
            get_json(store, &path(AttemptFile::Output)?).await?
        } else {
            None
        };
        let log = if has(AttemptFile::Log) {
            get(store, &path(AttemptFile::Log)?)
                .await?
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        } else {
            None
        };
        records.push(AttemptRecord {
            task,
            parallel_index,
            attempt,
            spec,
            status,
            output,
            log,
        });
    }
    Ok(records)
}

/// A run's full record from the bucket alone, in the shape the server's
/// `GetRun` returns: `run.json`, with each task refreshed from its newest
/// mirrored attempt and its attempts listed.
pub async fn read_run(store: &dyn ObjectStore, run_id: &str) -> Result<v1::Run, Error> {
    let doc = layout::run_doc(run_id)?;
    let mut run: v1::Run = get_json(store, &doc)
        .await?
        .ok_or_else(|| Error::RunNotFound(run_id.to_owned()))?;
    let attempts = read_run_attempts(store, run_id).await?;

    let mut by_instance: BTreeMap<(String, Option<u32>), Vec<AttemptRecord>> = BTreeMap::new();
    for a in attempts {
        by_instance
            .entry((a.task.clone(), a.parallel_index))
            .or_default()
            .push(a);
    }
    for ((name, parallel_index), attempts) in by_instance {
        let position = run
            .tasks
            .iter()
            .position(|t| t.name == name && t.parallel_index == parallel_index);
        let task = match position {
            Some(i) => &mut run.tasks[i],
            None => {
                // A fan-out instance created after the last `run.json`.
                run.tasks.push(v1::TaskRun {
                    run_id: run.id.clone(),
                    name: name.clone(),
                    parallel_index,
                    ..Default::default()
                });
                let last = run.tasks.len() - 1;
                &mut run.tasks[last]
            }
        };
        refresh_task(task, &attempts);
    }
    Ok(run)
}

/// Brings a task from `run.json` up to date with its attempts, which the
/// mirror writes on every attempt change (`run.json` only on run-level ones).
fn refresh_task(task: &mut v1::TaskRun, attempts: &[AttemptRecord]) {
    task.attempts = attempts
        .iter()
        .filter_map(|a| {
            let s = a.status.as_ref()?;
            Some(v1::Attempt {
                attempt: a.attempt,
                status: s.status.clone(),
                error: s.error.clone().unwrap_or_default(),
                dispatched_at: Some(crate::api::convert::timestamp(s.dispatched_at)),
                started_at: s.started_at.map(crate::api::convert::timestamp),
                finished_at: s.finished_at.map(crate::api::convert::timestamp),
                metrics: s.metrics.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            })
        })
        .collect();
    let Some(latest) = attempts.iter().rev().find(|a| a.status.is_some()) else {
        return;
    };
    // A task `run.json` does not list yet takes what its spec knows.
    if let Some(spec) = &latest.spec
        && task.id.is_empty()
    {
        task.id.clone_from(&spec.task_run_id);
        task.parallel_count = spec.parallel_count;
        task.executor.clone_from(&spec.executor);
        task.input = spec.input.as_ref().map(to_proto);
    }
    let Some(status) = &latest.status else { return };
    let settled = matches!(
        task.status.as_str(),
        "success" | "failed" | "skipped" | "cancelled"
    );
    // `run.json` already knows this attempt's outcome (or a newer one).
    if latest.attempt < task.attempt || (latest.attempt == task.attempt && settled) {
        return;
    }
    task.attempt = latest.attempt;
    task.status = match status.status.as_str() {
        // A failed attempt with retries left leaves the task pending a retry.
        "failed" if latest.attempt <= task.max_retries => "pending".to_owned(),
        other => other.to_owned(),
    };
    task.error = status.error.clone().unwrap_or_default();
    task.pending_reason = if task.status == "pending" {
        format!("retry: attempt {} failed", latest.attempt)
    } else {
        String::new()
    };
    task.dispatched_at = Some(crate::api::convert::timestamp(status.dispatched_at));
    task.started_at = status.started_at.map(crate::api::convert::timestamp);
    task.finished_at = status.finished_at.map(crate::api::convert::timestamp);
    if let Some(output) = &latest.output {
        task.output = Some(to_proto(output));
    }
}
