//! The keys of the mirror and the documents stored under them. Every key is
//! built here, from ids and names checked by [`object_path`] (no `..`, no `/`,
//! nothing empty), so no caller can step outside `runs/{run}/` or
//! `workflows/{name}/{version}/`.

use chrono::{DateTime, Utc};
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Error, check_segment, object_path};

/// One file of an attempt's folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptFile {
    Spec,
    Status,
    Output,
    Log,
}

impl AttemptFile {
    pub const ALL: [AttemptFile; 4] = [Self::Spec, Self::Status, Self::Output, Self::Log];

    pub fn name(self) -> &'static str {
        match self {
            Self::Spec => "spec.json",
            Self::Status => "status.json",
            Self::Output => "output.json",
            Self::Log => "log.txt",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// `runs/{run}/run.json`.
pub fn run_doc(run_id: &str) -> Result<Path, Error> {
    object_path(&["runs", run_id, "run.json"])
}

/// `runs/{run}/`: everything the mirror holds of a run.
pub fn run_prefix(run_id: &str) -> Result<Path, Error> {
    object_path(&["runs", run_id])
}

/// The folder of one task instance: `name`, or `name.index` for a fan-out
/// instance. Task names cannot contain dots, so this is unambiguous.
pub fn task_folder(task: &str, parallel_index: Option<u32>) -> Result<String, Error> {
    check_segment(task)?;
    if task.contains('.') {
        return Err(Error::InvalidSegment(task.to_owned()));
    }
    Ok(match parallel_index {
        Some(i) => format!("{task}.{i}"),
        None => task.to_owned(),
    })
}

/// Splits a task folder back into the task name and instance index.
pub fn parse_task_folder(folder: &str) -> Option<(String, Option<u32>)> {
    match folder.split_once('.') {
        None => Some((folder.to_owned(), None)),
        Some((name, index)) => Some((name.to_owned(), Some(index.parse().ok()?))),
    }
}

/// `runs/{run}/tasks/{task}[.{i}]/attempts/{n}/{file}`.
pub fn attempt_file(
    run_id: &str,
    task: &str,
    parallel_index: Option<u32>,
    attempt: u32,
    file: AttemptFile,
) -> Result<Path, Error> {
    let folder = task_folder(task, parallel_index)?;
    let attempt = attempt.to_string();
    object_path(&[
        "runs",
        run_id,
        "tasks",
        &folder,
        "attempts",
        &attempt,
        file.name(),
    ])
}

/// `runs/{run}/attempts/`: the segments of a run's attempts.
pub fn run_segments(run_id: &str) -> Result<Path, Error> {
    object_path(&["runs", run_id, "attempts"])
}

/// `runs/{run}/attempts/{n}.json`: one segment, the attempts of the run one
/// pass of the mirror copied; `n` (the first outbox entry it copied, 20
/// digits) orders segments by when their changes were recorded.
pub fn attempt_segment(run_id: &str, n: i64) -> Result<Path, Error> {
    object_path(&["runs", run_id, "attempts", &format!("{n:020}.json")])
}

/// True for a segment's key under `runs/{run}/attempts/`.
pub fn is_attempt_segment(run_id: &str, path: &Path) -> bool {
    let parts: Vec<_> = path.parts().collect();
    matches!(parts.as_slice(), [runs, run, attempts, name]
        if runs.as_ref() == "runs" && run.as_ref() == run_id && attempts.as_ref() == "attempts"
            && name.as_ref().ends_with(".json"))
}

/// `workflows/{name}/{version}/workflow.yaml`.
pub fn workflow_yaml(name: &str, version: &str) -> Result<Path, Error> {
    object_path(&["workflows", name, version, "workflow.yaml"])
}

/// `workflows/{name}/{version}/files/{path}`: `path` is the relative path the
/// YAML names, each of its segments checked.
pub fn workflow_file(name: &str, version: &str, path: &str) -> Result<Path, Error> {
    let mut segments = vec!["workflows", name, version, "files"];
    segments.extend(path.split('/'));
    object_path(&segments)
}

/// Where an attempt key points, parsed back from a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptKey {
    pub task: String,
    pub parallel_index: Option<u32>,
    pub attempt: u32,
    pub file: AttemptFile,
}

/// Parses `runs/{run}/tasks/{folder}/attempts/{n}/{file}` (relative to the
/// store's root); `None` for anything else.
pub fn parse_attempt_key(run_id: &str, path: &Path) -> Option<AttemptKey> {
    let parts: Vec<_> = path.parts().collect();
    let [runs, run, tasks, folder, attempts, n, file] = parts.as_slice() else {
        return None;
    };
    if runs.as_ref() != "runs" || run.as_ref() != run_id || tasks.as_ref() != "tasks" {
        return None;
    }
    if attempts.as_ref() != "attempts" {
        return None;
    }
    let (task, parallel_index) = parse_task_folder(folder.as_ref())?;
    Some(AttemptKey {
        task,
        parallel_index,
        attempt: n.as_ref().parse().ok()?,
        file: AttemptFile::from_name(file.as_ref())?,
    })
}

/// `spec.json`: what the attempt was asked to do. Secrets are named, never
/// resolved (see the mirror).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptSpec {
    pub run_id: String,
    pub task: String,
    pub task_run_id: String,
    pub attempt: u32,
    pub parallel_index: Option<u32>,
    pub parallel_count: Option<u32>,
    pub executor: String,
    pub input: Option<Value>,
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub timeout_seconds: Option<u32>,
    #[serde(default)]
    pub env: Option<Value>,
}

/// `status.json`: where the attempt stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptStatus {
    pub status: String,
    pub error: Option<String>,
    pub dispatched_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Figures the task recorded for this attempt, by name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub metrics: std::collections::BTreeMap<String, f64>,
}

/// One attempt in a segment: what the per-attempt files hold, in one record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptEntry {
    pub task: String,
    pub parallel_index: Option<u32>,
    pub attempt: u32,
    pub spec: AttemptSpec,
    pub status: AttemptStatus,
    /// The output, once the attempt succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// The log, once the attempt ended, when it is small; a larger one is in
    /// the attempt's own `log.txt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

/// A segment: the attempts of one run that one pass of the mirror copied,
/// each as it stood then. A later segment may hold a newer state of the same
/// attempt; readers keep the most advanced one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptSegment {
    pub attempts: Vec<AttemptEntry>,
}

/// `outputs/{task_run}/{attempt}.json`: an output too large for the database.
pub fn large_output(task_run_id: &str, attempt: u32) -> Result<Path, Error> {
    object_path(&["outputs", task_run_id, &format!("{attempt}.json")])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_built_from_checked_segments_only() {
        assert_eq!(
            attempt_file("r1", "fetch", Some(3), 2, AttemptFile::Output)
                .unwrap()
                .as_ref(),
            "runs/r1/tasks/fetch.3/attempts/2/output.json"
        );
        assert!(run_doc("..").is_err());
        assert!(run_doc("a/b").is_err());
        assert!(run_doc("").is_err());
        assert!(attempt_file("r1", "..", None, 1, AttemptFile::Log).is_err());
        assert!(attempt_file("r1", "a.b", None, 1, AttemptFile::Log).is_err());
        assert!(workflow_file("wf", "v1", "scripts/../../../etc/passwd").is_err());
        assert!(workflow_file("wf", "v1", "/abs").is_err());
        assert_eq!(
            workflow_file("wf", "v1", "scripts/a.sh").unwrap().as_ref(),
            "workflows/wf/v1/files/scripts/a.sh"
        );
    }

    #[test]
    fn segment_keys_sort_by_entry_and_are_recognised() {
        let a = attempt_segment("r1", 9).unwrap();
        let b = attempt_segment("r1", 10).unwrap();
        assert_eq!(a.as_ref(), "runs/r1/attempts/00000000000000000009.json");
        assert!(a.as_ref() < b.as_ref());
        assert!(is_attempt_segment("r1", &a));
        assert!(!is_attempt_segment("r2", &a));
        assert!(!is_attempt_segment("r1", &Path::from("runs/r1/run.json")));
    }

    #[test]
    fn attempt_keys_parse_back() {
        let path = attempt_file("r1", "fetch", Some(3), 2, AttemptFile::Spec).unwrap();
        assert_eq!(
            parse_attempt_key("r1", &path),
            Some(AttemptKey {
                task: "fetch".into(),
                parallel_index: Some(3),
                attempt: 2,
                file: AttemptFile::Spec
            })
        );
        assert_eq!(parse_attempt_key("r2", &path), None);
        assert_eq!(
            parse_attempt_key("r1", &Path::from("runs/r1/run.json")),
            None
        );
    }
}
