//! The labels every container and Kubernetes object of an attempt carries,
//! and the names derived from an attempt: written once so that the Docker
//! and Kubernetes executors find each other's conventions the same, and so
//! that a restarted server recognises what an earlier one started.
// Each container executor uses its own part of these.
#![cfg_attr(
    not(all(
        feature = "docker",
        feature = "kubernetes",
        feature = "fargate",
        feature = "cloudrun",
        feature = "containerapp"
    )),
    allow(dead_code)
)]

use std::collections::BTreeMap;

use super::Launch;

/// The task run the execution serves (a UUID, kept exact).
pub const TASK_RUN: &str = "ork/task-run-id";
/// The attempt number (kept exact).
pub const ATTEMPT: &str = "ork/attempt";
/// The run (a UUID, kept exact).
pub const RUN: &str = "ork/run-id";
/// The task's name (informational: cut to a valid label value).
pub const TASK: &str = "ork/task";
/// The workflow's name (informational).
pub const WORKFLOW: &str = "ork/workflow";
/// The server that started it (informational: a restarted server adopts
/// what belongs to the runs it owns, whatever its id).
pub const SERVER: &str = "ork/server";

/// Variables the worker reads, set on every container; the token is read
/// back from them when an execution is adopted.
pub const ENV_SERVER: &str = "ORK_SERVER";
pub const ENV_TASK_RUN_ID: &str = "ORK_TASK_RUN_ID";
pub const ENV_ATTEMPT: &str = "ORK_ATTEMPT";
pub const ENV_TOKEN: &str = "ORK_TOKEN";
pub const ENV_WORK_DIR: &str = "ORK_WORK_DIR";
/// Tells `ork-worker` its spec is on stdin (`ork_worker::launched::SPEC_STDIN`;
/// set by the subprocess executor only).
pub const ENV_SPEC_STDIN: &str = "ORK_SPEC_STDIN";

/// The labels of one attempt's execution.
pub fn for_launch(launch: &Launch, server_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (TASK_RUN.to_owned(), value(&launch.fence.task_run_id)),
        (ATTEMPT.to_owned(), launch.fence.attempt.to_string()),
        (RUN.to_owned(), value(&launch.spec.run_id)),
        (TASK.to_owned(), value(&launch.spec.task_name)),
        (WORKFLOW.to_owned(), value(&launch.workflow)),
        (SERVER.to_owned(), value(server_id)),
    ])
}

/// Where a launched worker calls back and the attempt's credential it
/// authenticates with: the one set of variables every executor that starts
/// `ork-worker` (subprocess, docker, kubernetes) gives it.
pub fn attempt_env(launch: &Launch, server_url: &str) -> Vec<(String, String)> {
    vec![
        (ENV_SERVER.to_owned(), server_url.to_owned()),
        (ENV_TASK_RUN_ID.to_owned(), launch.fence.task_run_id.clone()),
        (ENV_ATTEMPT.to_owned(), launch.fence.attempt.to_string()),
        (ENV_TOKEN.to_owned(), launch.fence.token.clone()),
    ]
}

/// The worker's environment in a container: [`attempt_env`] and its work
/// directory.
pub fn worker_env(launch: &Launch, server_url: &str, work_dir: &str) -> Vec<(String, String)> {
    let mut env = attempt_env(launch, server_url);
    env.push((ENV_WORK_DIR.to_owned(), work_dir.to_owned()));
    env
}

/// A valid Kubernetes label value (at most 63 characters of `[A-Za-z0-9-_.]`,
/// starting and ending with a letter or digit); Docker accepts the same.
pub fn value(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    cleaned
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

/// The name of an attempt's container or Job: `ork-<task run>-<attempt>`,
/// unique per attempt, so creating it twice finds the first one, and a valid
/// DNS label (Kubernetes names) of at most 63 characters.
pub fn execution_name(task_run_id: &str, attempt: u32) -> String {
    let id: String = task_run_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let suffix = format!("-{attempt}");
    let room = 63 - "ork-".len() - suffix.len();
    // UUIDv7s share their leading (time) digits: keep the end, which differs.
    let id = &id[id.len().saturating_sub(room)..];
    format!("ork-{id}{suffix}")
}

/// The fence written in an execution's labels and environment, if complete.
pub fn fence_of(
    labels: &BTreeMap<String, String>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Option<crate::state::Fence> {
    let task_run_id = labels.get(TASK_RUN)?.clone();
    let attempt = labels.get(ATTEMPT)?.parse().ok()?;
    let token = env
        .into_iter()
        .find_map(|(k, v)| (k == ENV_TOKEN).then_some(v))?;
    Some(crate::state::Fence {
        task_run_id,
        attempt,
        token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_valid_kubernetes_values() {
        assert_eq!(
            value("0195a4e2-7c1d-7b7e-9f00-1234567890ab"),
            "0195a4e2-7c1d-7b7e-9f00-1234567890ab"
        );
        assert_eq!(value("load_"), "load");
        assert_eq!(value("-x y-"), "x_y");
        assert_eq!(value(&"a".repeat(80)).len(), 63);
        assert_eq!(value("__"), "");
    }

    #[test]
    fn execution_names_are_dns_labels_unique_per_attempt() {
        let name = execution_name("0195a4e2-7c1d-7b7e-9f00-1234567890ab", 12);
        assert_eq!(name, "ork-0195a4e27c1d7b7e9f001234567890ab-12");
        assert!(name.len() <= 63);
        let long = execution_name(&"A".repeat(100), 4_000_000_000);
        assert!(long.len() <= 63, "{long}");
        assert!(
            long.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }

    #[test]
    fn fence_round_trips_through_labels_and_env() {
        let labels = BTreeMap::from([
            (TASK_RUN.to_owned(), "tr".to_owned()),
            (ATTEMPT.to_owned(), "3".to_owned()),
        ]);
        let fence = fence_of(&labels, [(ENV_TOKEN.to_owned(), "tok".to_owned())]);
        assert_eq!(
            fence,
            Some(crate::state::Fence {
                task_run_id: "tr".into(),
                attempt: 3,
                token: "tok".into()
            })
        );
        assert_eq!(fence_of(&labels, []), None);
    }
}
