//! The Cloud Run executor: one Cloud Run job per image and resources,
//! created once through the Admin API v2, and one job execution per attempt
//! (`jobs.run` with overrides), running `ork-worker` in the task's image.
//!
//! As in a Kubernetes pod, the worker arrives through a shared in-memory
//! volume: the job has an `ork-worker` container from `--worker-image` that
//! copies a self-contained `ork-worker` into it, and the task container
//! depends on it and starts the copy. Per attempt, `jobs.run` overrides the
//! task container's environment (the callback URL and the attempt's
//! credentials) and the execution's timeout (the task's, plus a margin, as a
//! backstop should the server not be there to cancel it). One monitor polls
//! the watched executions and turns one that ended without a report into an
//! attempt failure that says why ([`ended`]); cancel and ork's timeouts call
//! `executions.cancel`.
//!
//! Calls go through [`super::cloud_api`] (429s wait out `Retry-After`,
//! transient failures back off); credentials are Google's usual chain.
//! Executions are not adopted after a server restart: an attempt whose
//! execution outlives its server fails by its heartbeat timeout.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, OnceCell, mpsc};

use super::cloud_api::{ApiClient, ApiError, Auth, Repeat};
use super::watch::{End, Watched, Watchlist};
use super::{ContainerSpec, Error, ExecutionStatus, Executor, ExecutorEvent, Launch, labels};
use crate::state::{FailureKind, Fence};

/// Where the worker binary appears in the task container.
const WORKER_PATH: &str = "/ork/bin/ork-worker";
const WORK_DIR: &str = "/ork/work";
const VOLUME: &str = "ork";
const TASK_CONTAINER: &str = "task";
const INSTALL_CONTAINER: &str = "ork-worker";
/// Where the Admin API is when nothing says otherwise.
pub const DEFAULT_ENDPOINT: &str = "https://run.googleapis.com";
/// How often the monitor reads the watched executions.
const MONITOR_EVERY: Duration = Duration::from_secs(3);
/// Seconds past the task's timeout after which Cloud Run itself stops the
/// execution.
const DEADLINE_MARGIN_SECS: u32 = 60;
/// How long a job's creation may take before dispatch gives up.
const CREATE_PATIENCE: Duration = Duration::from_secs(120);
/// google.rpc.Code DEADLINE_EXCEEDED: a task attempt ran out of time.
const DEADLINE_EXCEEDED: i64 = 4;

/// Where Cloud Run tasks run; from `--cloudrun-*` server options.
#[derive(Debug, Clone)]
pub struct CloudRunOptions {
    pub project: String,
    /// The region, e.g. `europe-west1`.
    pub region: String,
    /// The Admin API's scheme and host.
    pub endpoint: String,
    pub auth: Auth,
    /// The service account the jobs run as; `None` is the project's default.
    pub service_account: Option<String>,
    pub worker_image: String,
    pub server_url: String,
    pub extra_env: Vec<(String, String)>,
}

/// Runs attempts as Cloud Run job executions.
pub struct CloudRunExecutor {
    options: CloudRunOptions,
    api: OnceCell<Arc<ApiClient>>,
    /// Jobs known to exist, by id.
    jobs: Mutex<HashMap<String, ()>>,
    /// Executions being watched, by execution name; the handle is the
    /// execution's resource name.
    watched: Arc<Watchlist>,
}

impl CloudRunExecutor {
    pub fn new(options: CloudRunOptions, events: mpsc::UnboundedSender<ExecutorEvent>) -> Self {
        Self {
            options,
            api: OnceCell::new(),
            jobs: Mutex::new(HashMap::new()),
            watched: Arc::new(Watchlist::new(events)),
        }
    }

    async fn api(&self) -> Result<&Arc<ApiClient>, Error> {
        self.api
            .get_or_try_init(|| async {
                let api = Arc::new(
                    ApiClient::new(&self.options.endpoint, self.options.auth.clone())
                        .map_err(|e| Error::Unavailable(e.to_string()))?,
                );
                tokio::spawn(monitor(api.clone(), self.watched.clone()));
                Ok(api)
            })
            .await
    }

    fn parent(&self) -> String {
        format!(
            "projects/{}/locations/{}",
            self.options.project, self.options.region
        )
    }

    /// The job for `spec`, created if this server has not seen it.
    async fn job(&self, api: &ApiClient, spec: &ContainerSpec) -> Result<String, Error> {
        let id = job_id(&self.options, spec);
        let name = format!("{}/jobs/{id}", self.parent());
        let mut known = self.jobs.lock().await;
        if known.contains_key(&id) {
            return Ok(name);
        }
        match api
            .call(Method::GET, &format!("v2/{name}"), None, Repeat::Safe)
            .await
        {
            Ok(_) => {}
            Err(e) if e.status == Some(404) => {
                let body = job_body(&self.options, spec);
                let path = format!("v2/{}/jobs?jobId={id}", self.parent());
                let operation = match api
                    .call(Method::POST, &path, Some(&body), Repeat::Safe)
                    .await
                {
                    Ok(operation) => operation,
                    // Created meanwhile by another server.
                    Err(e) if e.status == Some(409) => Value::Null,
                    Err(e) => return Err(api_error("create the Cloud Run job", e)),
                };
                if !operation.is_null() {
                    wait_operation(api, operation).await?;
                }
            }
            Err(e) => return Err(api_error("read the Cloud Run job", e)),
        }
        known.insert(id, ());
        Ok(name)
    }
}

fn api_error(what: &str, e: ApiError) -> Error {
    let text = format!("cannot {what}: {}", e.message);
    if e.is_refusal() {
        Error::Rejected(text)
    } else {
        Error::Unavailable(text)
    }
}

/// Waits for a long-running operation to be done; its error, if any.
async fn wait_operation(api: &ApiClient, mut operation: Value) -> Result<Value, Error> {
    let deadline = tokio::time::Instant::now() + CREATE_PATIENCE;
    loop {
        if operation["done"] == true {
            if let Some(message) = operation["error"]["message"].as_str() {
                return Err(Error::Rejected(format!("Cloud Run: {message}")));
            }
            return Ok(operation);
        }
        let Some(name) = operation["name"].as_str() else {
            return Ok(operation);
        };
        if tokio::time::Instant::now() > deadline {
            return Err(Error::Unavailable(format!(
                "the Cloud Run operation {name} is not done after {CREATE_PATIENCE:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        operation = api
            .call(Method::GET, &format!("v2/{name}"), None, Repeat::Safe)
            .await
            .map_err(|e| api_error("read a Cloud Run operation", e))?;
    }
}

/// The job id for this content: `ork-` and a hash of the images, limits and
/// service account, so every server finds the same job.
fn job_id(options: &CloudRunOptions, spec: &ContainerSpec) -> String {
    let content = json!({
        "image": spec.image,
        "worker_image": options.worker_image,
        "cpu": spec.cpu,
        "memory": spec.memory,
        "service_account": options.service_account,
    });
    let hash = Sha256::digest(content.to_string().as_bytes());
    let hex: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("ork-{hex}")
}

/// The job resource (`GoogleCloudRunV2Job`).
fn job_body(options: &CloudRunOptions, spec: &ContainerSpec) -> Value {
    let mount = json!([{"name": VOLUME, "mountPath": "/ork"}]);
    let mut limits = serde_json::Map::new();
    if let Some(cpu) = &spec.cpu {
        limits.insert("cpu".into(), json!(cpu));
    }
    if let Some(memory) = &spec.memory {
        limits.insert("memory".into(), json!(memory));
    }
    let mut task = json!({
        "name": TASK_CONTAINER,
        "image": spec.image,
        // `command` replaces the image's entrypoint, `args` its arguments.
        "command": [WORKER_PATH],
        "args": [],
        "volumeMounts": mount,
        "dependsOn": [INSTALL_CONTAINER],
    });
    if !limits.is_empty() {
        task["resources"] = json!({"limits": limits});
    }
    let mut template = json!({
        // ork retries attempts itself, each as a new execution.
        "maxRetries": 0,
        "volumes": [{"name": VOLUME, "emptyDir": {"medium": "MEMORY"}}],
        "containers": [
            task,
            {
                "name": INSTALL_CONTAINER,
                "image": options.worker_image,
                "command": ["/ork-worker", "install", WORKER_PATH],
                "volumeMounts": mount,
            }
        ],
    });
    if let Some(account) = &options.service_account {
        template["serviceAccount"] = json!(account);
    }
    json!({
        "labels": {"ork-managed": "true"},
        "template": {"taskCount": 1, "parallelism": 1, "template": template},
    })
}

/// The `jobs.run` request (`GoogleCloudRunV2RunJobRequest`) of an attempt.
fn run_body(launch: &Launch, server_url: &str, extra_env: &[(String, String)]) -> Value {
    let env: Vec<Value> = labels::worker_env(launch, server_url, WORK_DIR)
        .into_iter()
        .chain(extra_env.iter().cloned())
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    let timeout = launch
        .spec
        .timeout_seconds
        .saturating_add(DEADLINE_MARGIN_SECS);
    json!({
        "overrides": {
            "containerOverrides": [{"name": TASK_CONTAINER, "env": env}],
            "taskCount": 1,
            "timeout": format!("{timeout}s"),
        }
    })
}

/// Whether an execution (`GoogleCloudRunV2Execution`) is over, and why;
/// `tasks` is its `tasks.list` answer, read once it failed, for the exit
/// code. `None` while it runs.
fn ended(execution: &Value, tasks: Option<&Value>) -> Option<End> {
    let completed = execution["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Completed")?;
    let message = completed["message"].as_str().unwrap_or("").trim();
    match completed["state"].as_str()? {
        "CONDITION_SUCCEEDED" => Some(End::lost(
            "the job execution succeeded (exit code 0) before its worker reported a result",
        )),
        "CONDITION_FAILED" => {
            let reason = completed["executionReason"].as_str().unwrap_or("");
            if reason == "CANCELLED" || reason == "CANCELLING" {
                return Some(End::lost(format!(
                    "the job execution was cancelled from outside ork before its worker reported a result: {message}"
                )));
            }
            let attempt = tasks
                .and_then(|t| t["tasks"].as_array())
                .and_then(|t| t.first())
                .map(|t| &t["lastAttemptResult"]);
            let code = attempt.and_then(|a| a["exitCode"].as_i64());
            let status_code = attempt.and_then(|a| a["status"]["code"].as_i64());
            let detail = attempt
                .and_then(|a| a["status"]["message"].as_str())
                .unwrap_or(message);
            if status_code == Some(DEADLINE_EXCEEDED) {
                return Some(End {
                    description: format!(
                        "Cloud Run stopped the execution at its timeout: {detail}"
                    ),
                    kind: FailureKind::Timeout,
                    non_retryable: false,
                });
            }
            if detail.contains("Memory limit") {
                return Some(End {
                    description: format!("out of memory: {detail}"),
                    kind: FailureKind::Task,
                    non_retryable: false,
                });
            }
            let mut description = match code {
                Some(code) => format!(
                    "the container exited with code {code} before its worker reported a result"
                ),
                None => "the job execution failed before its worker reported a result".to_owned(),
            };
            if !detail.is_empty() {
                description.push_str(": ");
                description.push_str(detail);
            }
            Some(End::lost(description))
        }
        _ => None,
    }
}

/// Reads the watched executions every few seconds.
async fn monitor(api: Arc<ApiClient>, watchlist: Arc<Watchlist>) {
    loop {
        tokio::time::sleep(MONITOR_EVERY).await;
        if watchlist.is_closed() {
            return;
        }
        for (name, watched) in watchlist.snapshot() {
            let Some(execution_name) = watched.handle else {
                continue;
            };
            let execution = match api
                .call(
                    Method::GET,
                    &format!("v2/{execution_name}"),
                    None,
                    Repeat::Safe,
                )
                .await
            {
                Ok(execution) => execution,
                Err(e) if e.status == Some(404) => {
                    watchlist.end(
                        &name,
                        End::lost(
                            "the job execution was deleted before its worker reported a result",
                        ),
                    );
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, execution = %execution_name, "cannot read a Cloud Run execution");
                    continue;
                }
            };
            let failed = execution["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Completed" && c["state"] == "CONDITION_FAILED")
            });
            let tasks = if failed {
                api.call(
                    Method::GET,
                    &format!("v2/{execution_name}/tasks"),
                    None,
                    Repeat::Safe,
                )
                .await
                .ok()
            } else {
                None
            };
            if let Some(end) = ended(&execution, tasks.as_ref()) {
                watchlist.end(&name, end);
            }
        }
    }
}

#[async_trait]
impl Executor for CloudRunExecutor {
    async fn dispatch(&self, launch: &Launch) -> Result<(), Error> {
        let name = labels::execution_name(&launch.fence.task_run_id, launch.fence.attempt);
        let spec = launch.container.as_ref().ok_or_else(|| {
            Error::Rejected(format!(
                "task `{}` has no `image`; a cloudrun task needs one",
                launch.spec.task_name
            ))
        })?;
        let api = self.api().await?;
        let job = self.job(api, spec).await?;
        let body = run_body(launch, &self.options.server_url, &self.options.extra_env);
        // Not repeated after a 5xx: a second call could start a second
        // execution of the attempt.
        let operation = api
            .call(
                Method::POST,
                &format!("v2/{job}:run"),
                Some(&body),
                Repeat::Unsafe,
            )
            .await
            .map_err(|e| api_error("run the Cloud Run job", e))?;
        let execution = match operation["metadata"]["name"].as_str() {
            Some(execution) => execution.to_owned(),
            None => wait_operation(api, operation).await?["response"]["name"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| {
                    Error::Unavailable("Cloud Run started no execution and said no why".into())
                })?,
        };
        self.watched.watch(
            &name,
            Watched {
                fence: launch.fence.clone(),
                memory: spec.memory.clone(),
                handle: Some(execution),
            },
        );
        Ok(())
    }

    async fn cancel(&self, fence: &Fence) -> Result<(), Error> {
        let name = labels::execution_name(&fence.task_run_id, fence.attempt);
        // Whoever cancels decides the attempt's fate: no event for it.
        let Some(execution) = self.watched.unwatch(&name).and_then(|w| w.handle) else {
            return Ok(());
        };
        let api = self.api().await?;
        match api
            .call(
                Method::POST,
                &format!("v2/{execution}:cancel"),
                Some(&json!({})),
                Repeat::Safe,
            )
            .await
        {
            Ok(_) => Ok(()),
            // Gone, or already over: nothing left to stop.
            Err(e) if matches!(e.status, Some(404 | 409 | 400)) => Ok(()),
            Err(e) => Err(api_error("cancel the Cloud Run execution", e)),
        }
    }

    async fn status(&self, fence: &Fence) -> Result<ExecutionStatus, Error> {
        let name = labels::execution_name(&fence.task_run_id, fence.attempt);
        let Some(execution) = self.watched.get(&name).and_then(|w| w.handle) else {
            return Ok(ExecutionStatus::Unknown);
        };
        let api = self.api().await?;
        let execution = api
            .call(Method::GET, &format!("v2/{execution}"), None, Repeat::Safe)
            .await
            .map_err(|e| api_error("read the Cloud Run execution", e))?;
        Ok(match ended(&execution, None) {
            Some(_) if execution["succeededCount"].as_i64() == Some(1) => {
                ExecutionStatus::Exited { code: Some(0) }
            }
            Some(_) => ExecutionStatus::Exited { code: None },
            None => ExecutionStatus::Running,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn execution(state: &str, reason: &str, message: &str) -> Value {
        json!({"conditions": [
            {"type": "ResourcesAvailable", "state": "CONDITION_SUCCEEDED"},
            {"type": "Completed", "state": state, "executionReason": reason, "message": message}
        ]})
    }

    fn tasks(exit_code: i64, code: i64, message: &str) -> Value {
        json!({"tasks": [{"lastAttemptResult": {"exitCode": exit_code, "status": {"code": code, "message": message}}}]})
    }

    #[test]
    fn a_running_execution_has_not_ended() {
        assert_eq!(ended(&json!({"runningCount": 1}), None), None);
        assert_eq!(
            ended(&execution("CONDITION_RECONCILING", "", ""), None),
            None
        );
    }

    #[test]
    fn ends_say_why() {
        let end = ended(
            &execution("CONDITION_FAILED", "NON_ZERO_EXIT_CODE", "Task failed."),
            Some(&tasks(3, 2, "The container exited with an error.")),
        )
        .expect("ended");
        assert_eq!(
            end.description,
            "the container exited with code 3 before its worker reported a result: The container exited with an error."
        );
        assert_eq!(end.kind, FailureKind::Lost);
        let end = ended(
            &execution("CONDITION_FAILED", "", "Task failed."),
            Some(&tasks(0, 4, "Task attempt exceeded timeout of 120s.")),
        )
        .expect("ended");
        assert_eq!(end.kind, FailureKind::Timeout);
        let end = ended(
            &execution("CONDITION_FAILED", "NON_ZERO_EXIT_CODE", ""),
            Some(&tasks(
                137,
                2,
                "Memory limit of 512 MiB exceeded with 530 MiB used.",
            )),
        )
        .expect("ended");
        assert_eq!(end.kind, FailureKind::Task);
        assert!(ended(&execution("CONDITION_SUCCEEDED", "", ""), None).is_some());
    }
}
