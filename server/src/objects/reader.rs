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

/// How far an attempt had come when it was copied: a later copy of the same
/// attempt may be in an earlier segment (the mirrors of several replicas
/// write in any order), so the most advanced copy wins.
fn progress(record: &AttemptRecord) -> (u8, bool, bool) {
    let rank = match record.status.as_ref().map(|s| s.status.as_str()) {
        None => 0,
        Some("dispatched") => 1,
        Some("running") => 2,
        Some(_) => 3,
    };
    (rank, record.output.is_some(), record.log.is_some())
}

type Found = BTreeMap<(String, Option<u32>, u32), AttemptRecord>;

/// Keeps the most advanced copy of an attempt, and any log a copy has.
fn merge(found: &mut Found, record: AttemptRecord) {
    let key = (record.task.clone(), record.parallel_index, record.attempt);
    match found.get_mut(&key) {
        Some(held) => {
            let log = held.log.take();
            if progress(&record) > progress(held) {
                *held = record;
            }
            if held.log.is_none() {
                held.log = log;
            }
        }
        None => {
            found.insert(key, record);
        }
    }
}

/// Every attempt of a run the mirror holds, ordered by task folder, then
/// attempt: from the run's segments (`runs/{run}/attempts/`), and from the
/// per-attempt files of older mirrors and of logs too large for a segment.
pub async fn read_run_attempts(
    store: &dyn ObjectStore,
    run_id: &str,
) -> Result<Vec<AttemptRecord>, Error> {
    let prefix = layout::run_prefix(run_id)?;
    let keys: Vec<_> = store
        .list(Some(&prefix))
        .map_ok(|meta| meta.location)
        .try_collect()
        .await?;
    let mut found = Found::new();
    let mut segments: Vec<&object_store::path::Path> = keys
        .iter()
        .filter(|k| layout::is_attempt_segment(run_id, k))
        .collect();
    segments.sort();
    for key in segments {
        let Some(segment) = get_json::<layout::AttemptSegment>(store, key).await? else {
            continue;
        };
        for entry in segment.attempts {
            merge(
                &mut found,
                AttemptRecord {
                    task: entry.task,
                    parallel_index: entry.parallel_index,
                    attempt: entry.attempt,
                    spec: Some(entry.spec),
                    status: Some(entry.status),
                    output: entry.output,
                    log: entry.log,
                },
            );
        }
    }
    let mut files: BTreeMap<(String, Option<u32>, u32), Vec<AttemptFile>> = BTreeMap::new();
    for key in keys
        .iter()
        .filter_map(|k| layout::parse_attempt_key(run_id, k))
    {
        files
            .entry((key.task, key.parallel_index, key.attempt))
            .or_default()
            .push(key.file);
    }
    for ((task, parallel_index, attempt), files) in files {
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
        let record = AttemptRecord {
            task,
            parallel_index,
            attempt,
            spec,
            status,
            output,
            log,
        };
        match found.get_mut(&(record.task.clone(), record.parallel_index, record.attempt)) {
            // A large log kept apart from its segment's record.
            Some(held) if record.status.is_none() => {
                if held.log.is_none() {
                    held.log = record.log;
                }
            }
            _ => merge(&mut found, record),
        }
    }
    Ok(found.into_values().collect())
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
                dispatched_at: Some(ork_proto::time::to_proto(s.dispatched_at)),
                started_at: s.started_at.map(ork_proto::time::to_proto),
                finished_at: s.finished_at.map(ork_proto::time::to_proto),
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
    task.dispatched_at = Some(ork_proto::time::to_proto(status.dispatched_at));
    task.started_at = status.started_at.map(ork_proto::time::to_proto);
    task.finished_at = status.finished_at.map(ork_proto::time::to_proto);
    if let Some(output) = &latest.output {
        task.output = Some(to_proto(output));
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutPayload};
    use serde_json::json;

    use super::*;
    use crate::objects::layout::{AttemptEntry, AttemptSegment, AttemptSpec, AttemptStatus};

    fn entry(status: &str, output: Option<Value>, log: Option<&str>) -> AttemptEntry {
        AttemptEntry {
            task: "each".into(),
            parallel_index: Some(0),
            attempt: 1,
            spec: AttemptSpec {
                run_id: "r1".into(),
                task: "each".into(),
                task_run_id: "tr".into(),
                attempt: 1,
                parallel_index: Some(0),
                parallel_count: Some(1),
                executor: "workers".into(),
                input: None,
                file: None,
                timeout_seconds: None,
                env: None,
            },
            status: AttemptStatus {
                status: status.into(),
                error: None,
                dispatched_at: chrono::DateTime::UNIX_EPOCH,
                started_at: None,
                finished_at: None,
                metrics: Default::default(),
            },
            output,
            log: log.map(str::to_owned),
        }
    }

    async fn put(store: &InMemory, path: &Path, value: &impl serde::Serialize) {
        store
            .put(path, PutPayload::from(serde_json::to_vec(value).unwrap()))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn the_most_advanced_copy_of_an_attempt_wins_whatever_the_segment_order() {
        let store = InMemory::new();
        // Two mirrors: the later segment holds the older state.
        let done = entry("success", Some(json!(1)), None);
        let started = entry("running", None, None);
        for (n, e) in [(1, done), (2, started)] {
            put(
                &store,
                &layout::attempt_segment("r1", n).unwrap(),
                &AttemptSegment { attempts: vec![e] },
            )
            .await;
        }
        // Its log was too large for the segment: a file of its own.
        store
            .put(
                &layout::attempt_file("r1", "each", Some(0), 1, AttemptFile::Log).unwrap(),
                PutPayload::from("a long log\n"),
            )
            .await
            .unwrap();
        let read = read_run_attempts(&store, "r1").await.unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].status.as_ref().unwrap().status, "success");
        assert_eq!(read[0].output, Some(json!(1)));
        assert_eq!(read[0].log.as_deref(), Some("a long log\n"));
    }
}
