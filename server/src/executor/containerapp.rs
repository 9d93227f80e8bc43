//! The Container Apps executor: one Azure Container Apps job (manual
//! trigger) per image, resources and timeout, created once through Azure
//! Resource Manager, and one job execution per attempt (`start` with a
//! template override), running `ork-worker` in the task's image.
//!
//! As with Cloud Run, the worker arrives through a shared `EmptyDir`
//! volume: the job's init container from `--worker-image` copies a
//! self-contained `ork-worker` into it and the task container starts the
//! copy. Per attempt, `start` overrides the task container's environment
//! (the callback URL and the attempt's credentials). One monitor polls the
//! watched executions and turns one that ended without a report into an
//! attempt failure that says why ([`ended`]); cancel and ork's timeouts stop
//! the execution. ARM does not expose a container's exit code in
//! `2024-03-01`, so those failures cannot name one.
//!
//! Calls go through [`super::cloud_api`] (429s wait out `Retry-After`,
//! transient failures back off, `start` is never repeated); credentials are a
//! service principal's client secret or the managed identity endpoint.
//! Executions are not adopted after a server restart: an attempt whose
//! execution outlives its server fails by its heartbeat timeout.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, OnceCell, mpsc};

use super::cloud_api::{Answer, ApiClient, ApiError, Auth, Method, Repeat};
use super::watch::{End, Watched, Watchlist};
use super::{ContainerSpec, Error, ExecutionStatus, Executor, ExecutorEvent, Launch, labels};
use crate::state::Fence;

/// The Resource Manager API version every call names.
pub const API_VERSION: &str = "2024-03-01";
/// Where Resource Manager is when nothing says otherwise.
pub const DEFAULT_ENDPOINT: &str = "https://management.azure.com";
/// The resource ARM tokens are for.
pub const ARM_RESOURCE: &str = "https://management.azure.com/";
const WORKER_PATH: &str = "/ork/bin/ork-worker";
const WORK_DIR: &str = "/ork/work";
const VOLUME: &str = "ork";
const TASK_CONTAINER: &str = "task";
const INSTALL_CONTAINER: &str = "ork-worker";
const MONITOR_EVERY: Duration = Duration::from_secs(3);
/// Seconds past the task's timeout after which Container Apps itself stops
/// the replica (`replicaTimeout`), should the server not be there to.
const DEADLINE_MARGIN_SECS: u32 = 60;
/// How long a job's creation or an execution's start may take.
const OPERATION_PATIENCE: Duration = Duration::from_secs(120);

/// Where Container Apps tasks run; from `--containerapp-*` server options.
#[derive(Debug, Clone)]
pub struct ContainerAppOptions {
    pub subscription: String,
    pub resource_group: String,
    /// The managed environment's resource id.
    pub environment: String,
    /// The jobs' Azure region, e.g. `westeurope`.
    pub region: String,
    /// Resource Manager's scheme and host.
    pub endpoint: String,
    pub auth: Auth,
    pub worker_image: String,
    pub server_url: String,
    pub extra_env: Vec<(String, String)>,
}

/// Runs attempts as Container Apps job executions.
pub struct ContainerAppExecutor {
    options: ContainerAppOptions,
    api: OnceCell<Arc<ApiClient>>,
    /// Jobs known to exist, by name.
    jobs: Mutex<HashSet<String>>,
    /// Executions being watched, by ork's execution name; the handle is the
    /// execution's path under the job (`{job}/executions/{execution}`).
    watched: Arc<Watchlist>,
}

impl ContainerAppExecutor {
    pub fn new(options: ContainerAppOptions, events: mpsc::UnboundedSender<ExecutorEvent>) -> Self {
        Self {
            options,
            api: OnceCell::new(),
            jobs: Mutex::new(HashSet::new()),
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
                tokio::spawn(monitor(api.clone(), self.watched.clone(), self.jobs_path()));
                Ok(api)
            })
            .await
    }

    fn jobs_path(&self) -> String {
        jobs_path(&self.options)
    }

    /// The job for this attempt's image, resources and timeout, created if
    /// this server has not seen it.
    async fn job(
        &self,
        api: &ApiClient,
        launch: &Launch,
        spec: &ContainerSpec,
    ) -> Result<String, Error> {
        let name = job_name(&self.options, spec, launch.spec.timeout_seconds);
        let mut known = self.jobs.lock().await;
        if known.contains(&name) {
            return Ok(name);
        }
        let path = format!("{}/{name}?api-version={API_VERSION}", self.jobs_path());
        match api.call(Method::GET, &path, None, Repeat::Safe).await {
            Ok(job) if job["properties"]["provisioningState"] == "Succeeded" => {}
            Ok(_) => wait_job(api, &path).await?,
            Err(e) if e.status == Some(404) => {
                let body = job_body(&self.options, spec, launch.spec.timeout_seconds);
                // A PUT of the same body is idempotent: safe to repeat.
                let answer = api
                    .call_full(Method::PUT, &path, Some(&body), Repeat::Safe)
                    .await
                    .map_err(|e| api_error("create the Container Apps job", e))?;
                wait_put(api, &answer, &path).await?;
            }
            Err(e) => return Err(api_error("read the Container Apps job", e)),
        }
        known.insert(name.clone());
        Ok(name)
    }
}

/// `/subscriptions/…/resourceGroups/…/providers/Microsoft.App/jobs`.
fn jobs_path(options: &ContainerAppOptions) -> String {
    format!(
        "subscriptions/{}/resourceGroups/{}/providers/Microsoft.App/jobs",
        options.subscription, options.resource_group
    )
}

fn api_error(what: &str, e: ApiError) -> Error {
    let text = format!("cannot {what}: {}", e.message);
    if e.is_refusal() {
        Error::Rejected(text)
    } else {
        Error::Unavailable(text)
    }
}

/// Follows ARM's long-running operation protocol after the job's PUT: the
/// `Azure-AsyncOperation` URL until its `status` is terminal, else the
/// `Location` URL until it stops answering 202, else the job itself until
/// its `provisioningState` is.
async fn wait_put(api: &ApiClient, answer: &Answer, job_path: &str) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + OPERATION_PATIENCE;
    if let Some(url) = answer.header("azure-asyncoperation") {
        loop {
            let status = api
                .call(Method::GET, url, None, Repeat::Safe)
                .await
                .map_err(|e| api_error("read the job's creation status", e))?;
            match status["status"].as_str().unwrap_or("") {
                "Succeeded" => return Ok(()),
                "Failed" | "Canceled" => {
                    return Err(Error::Rejected(format!(
                        "Container Apps could not create the job: {}",
                        status["error"]["message"]
                            .as_str()
                            .unwrap_or("no reason given")
                    )));
                }
                _ => {}
            }
            patience(deadline).await?;
        }
    }
    if let Some(url) = answer.header("location") {
        loop {
            let polled = api
                .call_full(Method::GET, url, None, Repeat::Safe)
                .await
                .map_err(|e| api_error("read the job's creation status", e))?;
            if polled.status != 202 {
                return Ok(());
            }
            patience(deadline).await?;
        }
    }
    match answer.body["properties"]["provisioningState"].as_str() {
        None | Some("Succeeded") => Ok(()),
        Some(_) => wait_job(api, job_path).await,
    }
}

/// Reads the job until its provisioning is over.
async fn wait_job(api: &ApiClient, job_path: &str) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + OPERATION_PATIENCE;
    loop {
        let job = api
            .call(Method::GET, job_path, None, Repeat::Safe)
            .await
            .map_err(|e| api_error("read the Container Apps job", e))?;
        match job["properties"]["provisioningState"].as_str() {
            Some("Succeeded") | None => return Ok(()),
            Some(state @ ("Failed" | "Canceled")) => {
                return Err(Error::Rejected(format!(
                    "the Container Apps job's provisioning is {state}"
                )));
            }
            Some(_) => {}
        }
        patience(deadline).await?;
    }
}

async fn patience(deadline: tokio::time::Instant) -> Result<(), Error> {
    if tokio::time::Instant::now() > deadline {
        return Err(Error::Unavailable(format!(
            "a Container Apps operation is not done after {OPERATION_PATIENCE:?}"
        )));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

/// The job name for this content: `ork-` and a hash of the images, limits,
/// timeout and environment, so every server finds the same job (Container
/// Apps names: lowercase, at most 32 characters).
fn job_name(options: &ContainerAppOptions, spec: &ContainerSpec, timeout_seconds: u32) -> String {
    let content = json!({
        "image": spec.image,
        "worker_image": options.worker_image,
        "cpu": spec.cpu,
        "memory": spec.memory,
        "timeout": timeout_seconds,
        "environment": options.environment,
    });
    let hash = Sha256::digest(content.to_string().as_bytes());
    let hex: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("ork-{hex}")
}

/// The task's resources as Container Apps writes them: cores as a number,
/// memory as `0.5Gi`-style text (Kubernetes quantities such as `512Mi` pass
/// through).
fn resources(spec: &ContainerSpec) -> Option<Value> {
    let mut resources = serde_json::Map::new();
    if let Some(cpu) = &spec.cpu {
        let cores = match cpu.strip_suffix('m') {
            Some(milli) => milli.parse::<f64>().ok().map(|m| m / 1000.0),
            None => cpu.parse::<f64>().ok(),
        };
        if let Some(cores) = cores {
            resources.insert("cpu".into(), json!(cores));
        }
    }
    if let Some(memory) = &spec.memory {
        resources.insert("memory".into(), json!(memory));
    }
    (!resources.is_empty()).then_some(Value::Object(resources))
}

/// The job resource (`Job`): manual trigger, one replica, no retries (ork
/// retries attempts itself), the install init container and the volume.
fn job_body(options: &ContainerAppOptions, spec: &ContainerSpec, timeout_seconds: u32) -> Value {
    let mounts = json!([{"volumeName": VOLUME, "mountPath": "/ork"}]);
    let mut task = json!({
        "name": TASK_CONTAINER,
        "image": spec.image,
        "command": [WORKER_PATH],
        "args": [],
        "volumeMounts": mounts,
    });
    if let Some(resources) = resources(spec) {
        task["resources"] = resources;
    }
    json!({
        "location": options.region,
        "tags": {"ork-managed": "true"},
        "properties": {
            "environmentId": options.environment,
            "configuration": {
                "triggerType": "Manual",
                "replicaTimeout": timeout_seconds.saturating_add(DEADLINE_MARGIN_SECS),
                "replicaRetryLimit": 0,
                "manualTriggerConfig": {"replicaCompletionCount": 1, "parallelism": 1},
            },
            "template": {
                "initContainers": [{
                    "name": INSTALL_CONTAINER,
                    "image": options.worker_image,
                    "command": ["/ork-worker", "install", WORKER_PATH],
                    "volumeMounts": mounts,
                }],
                "containers": [task],
                "volumes": [{"name": VOLUME, "storageType": "EmptyDir"}],
            },
        },
    })
}

/// The `start` body (`JobExecutionTemplate`) of an attempt: the task
/// container with the attempt's environment.
fn start_body(
    launch: &Launch,
    spec: &ContainerSpec,
    server_url: &str,
    extra_env: &[(String, String)],
) -> Value {
    let env: Vec<Value> = labels::worker_env(launch, server_url, WORK_DIR)
        .into_iter()
        .chain(extra_env.iter().cloned())
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    let mut task = json!({
        "name": TASK_CONTAINER,
        "image": spec.image,
        "command": [WORKER_PATH],
        "args": [],
        "env": env,
    });
    if let Some(resources) = resources(spec) {
        task["resources"] = resources;
    }
    json!({"containers": [task]})
}

/// Whether an execution (`JobExecution`) is over, and why; `None` while it
/// runs. ARM reports no exit code.
fn ended(execution: &Value) -> Option<End> {
    match execution["properties"]["status"].as_str()? {
        "Succeeded" => Some(End::lost(
            "the job execution succeeded (exit code 0) before its worker reported a result",
        )),
        "Failed" => Some(End::lost(
            "the job execution failed before its worker reported a result \
             (Azure Resource Manager does not say the exit code; see the execution's console logs)",
        )),
        "Degraded" => Some(End::lost(
            "the job execution is degraded (its replica failed) and its worker reported no result",
        )),
        "Stopped" => Some(End::lost(
            "the job execution was stopped from outside ork before its worker reported a result",
        )),
        // Running, Processing, Unknown.
        _ => None,
    }
}

/// Reads the watched executions every few seconds.
async fn monitor(api: Arc<ApiClient>, watchlist: Arc<Watchlist>, jobs: String) {
    loop {
        tokio::time::sleep(MONITOR_EVERY).await;
        if watchlist.is_closed() {
            return;
        }
        for (name, watched) in watchlist.snapshot() {
            let Some(handle) = watched.handle else {
                continue;
            };
            let path = format!("{jobs}/{handle}?api-version={API_VERSION}");
            match api.call(Method::GET, &path, None, Repeat::Safe).await {
                Ok(execution) => {
                    if let Some(end) = ended(&execution) {
                        watchlist.end(&name, end);
                    }
                }
                Err(e) if e.status == Some(404) => {
                    watchlist.end(
                        &name,
                        End::lost(
                            "the job execution was deleted before its worker reported a result",
                        ),
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, execution = %handle, "cannot read a Container Apps job execution");
                }
            }
        }
    }
}

#[async_trait]
impl Executor for ContainerAppExecutor {
    async fn dispatch(&self, launch: &Launch) -> Result<(), Error> {
        let name = labels::execution_name(&launch.fence.task_run_id, launch.fence.attempt);
        let spec = launch.container.as_ref().ok_or_else(|| {
            Error::Rejected(format!(
                "task `{}` has no `image`; a containerapp task needs one",
                launch.spec.task_name
            ))
        })?;
        let api = self.api().await?;
        let job = self.job(api, launch, spec).await?;
        let body = start_body(
            launch,
            spec,
            &self.options.server_url,
            &self.options.extra_env,
        );
        // Not repeated after a 5xx: a second call could start a second
        // execution of the attempt.
        let answer = api
            .call_full(
                Method::POST,
                &format!("{}/{job}/start?api-version={API_VERSION}", self.jobs_path()),
                Some(&body),
                Repeat::Unsafe,
            )
            .await
            .map_err(|e| api_error("start the Container Apps job", e))?;
        let mut started = answer.body;
        if started["name"].as_str().is_none()
            && let Some(location) = answer.headers.get("location").and_then(|v| v.to_str().ok())
        {
            // 202: the execution's name arrives at `Location`.
            let deadline = tokio::time::Instant::now() + OPERATION_PATIENCE;
            loop {
                let polled = api
                    .call_full(Method::GET, location, None, Repeat::Safe)
                    .await
                    .map_err(|e| api_error("read the job's start status", e))?;
                if polled.status != 202 {
                    started = polled.body;
                    break;
                }
                patience(deadline).await?;
            }
        }
        let execution = started["name"].as_str().ok_or_else(|| {
            Error::Unavailable("Container Apps started no execution and said no why".into())
        })?;
        self.watched.watch(
            &name,
            Watched {
                fence: launch.fence.clone(),
                memory: spec.memory.clone(),
                handle: Some(format!("{job}/executions/{execution}")),
            },
        );
        Ok(())
    }

    async fn cancel(&self, fence: &Fence) -> Result<(), Error> {
        let name = labels::execution_name(&fence.task_run_id, fence.attempt);
        // Whoever cancels decides the attempt's fate: no event for it.
        let Some(handle) = self.watched.unwatch(&name).and_then(|w| w.handle) else {
            return Ok(());
        };
        let api = self.api().await?;
        match api
            .call(
                Method::POST,
                &format!(
                    "{}/{handle}/stop?api-version={API_VERSION}",
                    self.jobs_path()
                ),
                None,
                Repeat::Safe,
            )
            .await
        {
            Ok(_) => Ok(()),
            // Gone, or already over: nothing left to stop.
            Err(e) if matches!(e.status, Some(404 | 409 | 400)) => Ok(()),
            Err(e) => Err(api_error("stop the Container Apps job execution", e)),
        }
    }

    async fn status(&self, fence: &Fence) -> Result<ExecutionStatus, Error> {
        let name = labels::execution_name(&fence.task_run_id, fence.attempt);
        let Some(handle) = self.watched.get(&name).and_then(|w| w.handle) else {
            return Ok(ExecutionStatus::Unknown);
        };
        let api = self.api().await?;
        let execution = api
            .call(
                Method::GET,
                &format!("{}/{handle}?api-version={API_VERSION}", self.jobs_path()),
                None,
                Repeat::Safe,
            )
            .await
            .map_err(|e| api_error("read the Container Apps job execution", e))?;
        Ok(match ended(&execution) {
            Some(_) if execution["properties"]["status"] == "Succeeded" => {
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
    use crate::state::FailureKind;
    use ork_domain::ImagePullPolicy;

    fn execution(status: &str) -> Value {
        json!({"name": "ork-1-abc", "properties": {"status": status}})
    }

    #[test]
    fn running_executions_have_not_ended_and_ends_say_why() {
        for status in ["Running", "Processing", "Unknown"] {
            assert_eq!(ended(&execution(status)), None, "{status}");
        }
        assert_eq!(ended(&json!({})), None);
        for (status, says) in [
            ("Succeeded", "exit code 0"),
            ("Failed", "does not say the exit code"),
            ("Degraded", "degraded"),
            ("Stopped", "stopped from outside ork"),
        ] {
            let end = ended(&execution(status)).expect(status);
            assert!(
                end.description.contains(says),
                "{status}: {}",
                end.description
            );
            assert_eq!(end.kind, FailureKind::Lost);
        }
    }

    #[test]
    fn resources_are_written_as_container_apps_reads_them() {
        let spec = |cpu: Option<&str>, memory: Option<&str>| ContainerSpec {
            image: "python:3.12".into(),
            cpu: cpu.map(str::to_owned),
            memory: memory.map(str::to_owned),
            pull_policy: ImagePullPolicy::Always,
        };
        assert_eq!(
            resources(&spec(Some("500m"), Some("1Gi"))),
            Some(json!({"cpu": 0.5, "memory": "1Gi"}))
        );
        assert_eq!(resources(&spec(Some("2"), None)), Some(json!({"cpu": 2.0})));
        assert_eq!(resources(&spec(None, None)), None);
    }
}
