//! The Fargate executor: one ECS task per attempt, launched with RunTask on
//! AWS Fargate, running `ork-worker` in the task's image.
//!
//! Fargate has no bind mounts, so the worker arrives as it does in a
//! Kubernetes pod: the task definition has a non-essential `ork-worker`
//! container from `--worker-image` that copies a self-contained
//! `ork-worker` into a task-scoped volume, and the task container, which
//! depends on its success, starts it as its entry point. A task definition
//! is registered once per content (images, size, roles): its family is
//! `ork-` and a hash of that content, so every server finds and reuses it.
//!
//! What differs per attempt travels in RunTask's container overrides: the
//! callback URL (`--advertise-url`) and the attempt's credentials. Each task
//! is tagged with the attempt (the labels every container executor writes)
//! and `startedBy` its execution name, so a restarted server finds it again.
//! One monitor per executor describes the watched tasks every few seconds,
//! 100 per call, and turns a task that stopped without a report into an
//! attempt failure that says why ([`ended`]): out of memory, an image that
//! cannot be pulled, a non-zero exit, a Spot interruption, a stop from
//! outside ork. Cancel and timeout stop the task with StopTask (SIGTERM,
//! then SIGKILL after the container's stop timeout).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ecs::Client;
use aws_sdk_ecs::config::http::HttpResponse;
use aws_sdk_ecs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, Compatibility, ContainerCondition, ContainerDefinition,
    ContainerDependency, ContainerOverride, DesiredStatus, KeyValuePair, LaunchType, MountPoint,
    NetworkConfiguration, NetworkMode, Tag, TaskField, TaskOverride, Volume,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, OnceCell, mpsc};

use super::watch::{End, Watched, Watchlist};
use super::{ContainerSpec, Error, Execution, ExecutionStatus, Executor, ExecutorEvent, Launch};
use super::{labels, labels::worker_env};
use crate::state::{FailureKind, Fence};

/// Where the worker binary appears in the task container.
const WORKER_PATH: &str = "/ork/bin/ork-worker";
/// The attempt directories' parent in the task container.
const WORK_DIR: &str = "/ork/work";
/// The task-scoped volume holding both.
const VOLUME: &str = "ork";
/// The container that runs the task (and `ork-worker`).
const TASK_CONTAINER: &str = "task";
/// The container that installs `ork-worker` into the volume.
const INSTALL_CONTAINER: &str = "ork-worker";
/// The shape of the task definitions this code registers, part of their
/// family's hash: a change to [`FargateExecutor::register`] bumps it, so
/// that servers never reuse a definition of another shape.
const DEFINITION_LAYOUT: u32 = 1;
/// The installer container's hard memory limit, in MiB.
const INSTALL_MEMORY_MIB: u64 = 64;
/// How often the monitor describes the watched tasks. DescribeTasks is
/// throttled per account (20 per second sustained), and one call covers 100
/// tasks.
const MONITOR_EVERY: Duration = Duration::from_secs(3);
/// DescribeTasks takes at most this many tasks.
const DESCRIBE_BATCH: usize = 100;
/// The longest stop timeout Fargate allows.
const MAX_STOP_TIMEOUT_SECS: u64 = 120;
/// The reason ork gives StopTask, shown in the console.
const STOP_REASON: &str = "ork: the attempt was cancelled, timed out or is over";

/// Where Fargate tasks run; from `--fargate-*` server options.
#[derive(Debug, Clone)]
pub struct FargateOptions {
    /// The ECS cluster (name or ARN).
    pub cluster: String,
    /// The VPC subnets of the tasks' network interfaces.
    pub subnets: Vec<String>,
    /// Their security groups (none: the VPC's default group).
    pub security_groups: Vec<String>,
    /// Give tasks a public IP (needed in a public subnet without a NAT
    /// gateway, to pull images and reach the server).
    pub assign_public_ip: bool,
    /// The AWS region; `None` reads `AWS_REGION` or the profile.
    pub region: Option<String>,
    /// The ECS API's URL; `None` is AWS's (or `AWS_ENDPOINT_URL_ECS`).
    pub endpoint_url: Option<String>,
    /// The task execution role (pulls from private registries, writes logs).
    pub execution_role_arn: Option<String>,
    /// The role the task's code runs as.
    pub task_role_arn: Option<String>,
    /// The image whose `/ork-worker` the install container copies.
    pub worker_image: String,
    /// The URL workers call back on.
    pub server_url: String,
    /// This server's id, written in the `ork/server` tag.
    pub server_id: String,
    /// Between StopTask's SIGTERM and SIGKILL (at most 120 s on Fargate).
    pub kill_grace: Duration,
    /// More variables for the worker (the TLS server name to check).
    pub extra_env: Vec<(String, String)>,
}

/// Runs attempts as ECS tasks on Fargate.
pub struct FargateExecutor {
    options: FargateOptions,
    /// The client, made on first use, with the monitor.
    client: OnceCell<Client>,
    /// Task definition ARNs by family, registered or found once.
    definitions: Mutex<HashMap<String, String>>,
    /// Tasks being watched, by execution name; the handle is the task ARN.
    watched: Arc<Watchlist>,
    /// What the last [`Executor::list`] found, by execution name: the task
    /// ARN and whether it had stopped. ECS keeps stopped tasks for about an
    /// hour and they cannot be deleted, so the reconciliation finds those of
    /// finished attempts again and again: their cancel costs no call.
    listed: std::sync::Mutex<HashMap<String, (String, bool)>>,
}

impl FargateExecutor {
    pub fn new(options: FargateOptions, events: mpsc::UnboundedSender<ExecutorEvent>) -> Self {
        Self {
            options,
            client: OnceCell::new(),
            definitions: Mutex::new(HashMap::new()),
            watched: Arc::new(Watchlist::new(events)),
            listed: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn listed(&self, name: &str) -> Option<(String, bool)> {
        self.listed.lock().ok()?.get(name).cloned()
    }

    async fn client(&self) -> Result<&Client, Error> {
        self.client
            .get_or_init(|| async {
                let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
                if let Some(region) = &self.options.region {
                    loader = loader.region(aws_config::Region::new(region.clone()));
                }
                let shared = loader.load().await;
                let mut config = aws_sdk_ecs::config::Builder::from(&shared);
                if let Some(url) = &self.options.endpoint_url {
                    config = config.endpoint_url(url);
                }
                let client = Client::from_conf(config.build());
                tokio::spawn(monitor(
                    client.clone(),
                    self.options.cluster.clone(),
                    self.watched.clone(),
                ));
                client
            })
            .await;
        self.client
            .get()
            .ok_or_else(|| Error::Unavailable("the ECS client is not ready".to_owned()))
    }

    /// The ARN of the task definition for `spec`: cached, else the active
    /// revision of its family, else a new registration.
    async fn task_definition(
        &self,
        client: &Client,
        spec: &ContainerSpec,
    ) -> Result<String, Error> {
        let size = size(spec).map_err(Error::Rejected)?;
        let family = family(&self.options, spec, size);
        let mut cache = self.definitions.lock().await;
        if let Some(arn) = cache.get(&family) {
            return Ok(arn.clone());
        }
        let found = client
            .describe_task_definition()
            .task_definition(&family)
            .send()
            .await
            .ok()
            .and_then(|out| out.task_definition)
            .filter(|d| d.status.as_ref().is_some_and(|s| s.as_str() == "ACTIVE"))
            .and_then(|d| d.task_definition_arn);
        let arn = match found {
            Some(arn) => arn,
            None => self.register(client, spec, size, &family).await?,
        };
        cache.insert(family, arn.clone());
        Ok(arn)
    }

    async fn register(
        &self,
        client: &Client,
        spec: &ContainerSpec,
        size: Size,
        family: &str,
    ) -> Result<String, Error> {
        let mount = MountPoint::builder()
            .source_volume(VOLUME)
            .container_path("/ork")
            .read_only(false)
            .build();
        let installed = ContainerDependency::builder()
            .container_name(INSTALL_CONTAINER)
            .condition(ContainerCondition::Success)
            .build()
            .map_err(|e| Error::Rejected(e.to_string()))?;
        let stop_timeout = self.options.kill_grace.as_secs().min(MAX_STOP_TIMEOUT_SECS);
        // The task's memory, split: the installer gets a small hard limit
        // (it copies one file), the task container reserves the rest and
        // may use all of the task's.
        let task_reservation = size.memory_mib.saturating_sub(INSTALL_MEMORY_MIB);
        // The task container first: it is the one that matters, and tools
        // that show one container show the first.
        let task = ContainerDefinition::builder()
            .name(TASK_CONTAINER)
            .image(&spec.image)
            .essential(true)
            // The entry point replaces the image's, and the empty command
            // its default arguments.
            .set_entry_point(Some(vec![WORKER_PATH.to_owned()]))
            .set_command(Some(Vec::new()))
            .mount_points(mount.clone())
            .depends_on(installed)
            .stop_timeout(i32::try_from(stop_timeout).unwrap_or(30))
            .memory_reservation(i32::try_from(task_reservation).unwrap_or(i32::MAX))
            .build();
        let install = ContainerDefinition::builder()
            .name(INSTALL_CONTAINER)
            .image(&self.options.worker_image)
            .essential(false)
            .memory(i32::try_from(INSTALL_MEMORY_MIB).unwrap_or(64))
            .set_command(Some(vec![
                "/ork-worker".to_owned(),
                "install".to_owned(),
                WORKER_PATH.to_owned(),
            ]))
            .mount_points(mount)
            .build();
        let out = client
            .register_task_definition()
            .family(family)
            .network_mode(NetworkMode::Awsvpc)
            .requires_compatibilities(Compatibility::Fargate)
            .cpu(size.cpu.to_string())
            .memory(size.memory_mib.to_string())
            .set_execution_role_arn(self.options.execution_role_arn.clone())
            .set_task_role_arn(self.options.task_role_arn.clone())
            .volumes(Volume::builder().name(VOLUME).build())
            .container_definitions(task)
            .container_definitions(install)
            .tags(Tag::builder().key("ork/managed").value("true").build())
            .send()
            .await
            .map_err(|e| {
                let text = format!(
                    "cannot register the task definition {family}: {}",
                    explain(&e)
                );
                if is_refusal(&e) {
                    Error::Rejected(text)
                } else {
                    Error::Unavailable(text)
                }
            })?;
        out.task_definition
            .and_then(|d| d.task_definition_arn)
            .ok_or_else(|| {
                Error::Unavailable(format!(
                    "ECS registered the task definition {family} but returned no ARN"
                ))
            })
    }

    /// The ARN of the execution named `name`: the watched one, else the
    /// task ECS lists as started by that name (running ones first).
    async fn arn_of(&self, client: &Client, name: &str) -> Result<Option<String>, Error> {
        if let Some(arn) = self.watched.get(name).and_then(|w| w.handle) {
            return Ok(Some(arn));
        }
        if let Some((arn, _)) = self.listed(name) {
            return Ok(Some(arn));
        }
        for status in [DesiredStatus::Running, DesiredStatus::Stopped] {
            let out = client
                .list_tasks()
                .cluster(&self.options.cluster)
                .started_by(name)
                .desired_status(status)
                .send()
                .await
                .map_err(|e| unavailable("list tasks", &e))?;
            if let Some(arn) = out.task_arns.unwrap_or_default().into_iter().next() {
                return Ok(Some(arn));
            }
        }
        Ok(None)
    }

    async fn stop(&self, client: &Client, arn: &str) -> Result<(), Error> {
        match client
            .stop_task()
            .cluster(&self.options.cluster)
            .task(arn)
            .reason(STOP_REASON)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let text = explain(&e);
                // Already stopped and gone: nothing left to stop.
                if is_refusal(&e) && text.contains("not found") {
                    Ok(())
                } else {
                    Err(Error::Unavailable(format!(
                        "cannot stop task {arn}: {text}"
                    )))
                }
            }
        }
    }
}

fn unavailable<E>(what: &str, e: &SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    Error::Unavailable(format!("cannot {what} in ECS: {}", explain(e)))
}

/// An ECS error in a line: its code and message, else the HTTP status, else
/// the SDK's account (a connection error, a timeout).
fn explain<E>(e: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match (e.code(), e.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        (None, _) => match e {
            SdkError::ServiceError(service) => {
                format!("HTTP {} from the ECS API", service.raw().status().as_u16())
            }
            other => DisplayErrorContext(other).to_string(),
        },
    }
}

/// Errors that retrying the same request will not fix: a wrong cluster,
/// subnet, role or image reference, or missing permissions.
fn is_refusal<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    matches!(
        e.code(),
        Some(
            "InvalidParameterException"
                | "ClientException"
                | "ClusterNotFoundException"
                | "AccessDeniedException"
                | "PlatformUnknownException"
                | "UnsupportedFeatureException"
        )
    )
}

/// A Fargate task size: CPU units (1024 per vCPU) and memory in MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Size {
    cpu: u64,
    memory_mib: u64,
}

/// The valid Fargate (Linux) sizes: per CPU, its memory range and step.
const SIZES: &[(u64, u64, u64, u64)] = &[
    (256, 512, 2048, 512),
    (512, 1024, 4096, 1024),
    (1024, 2048, 8192, 1024),
    (2048, 4096, 16384, 1024),
    (4096, 8192, 30720, 1024),
    (8192, 16384, 61440, 4096),
    (16384, 32768, 122_880, 8192),
];

/// The smallest Fargate size that holds the task's `resources` (Fargate
/// only offers fixed combinations); the smallest size when none are given.
fn size(spec: &ContainerSpec) -> Result<Size, String> {
    let millis = match &spec.cpu {
        Some(cpu) => ork_domain::quantity::cpu_millis(cpu)?,
        None => 0,
    };
    let bytes = match &spec.memory {
        Some(memory) => ork_domain::quantity::memory_bytes(memory)?,
        None => 0,
    };
    let cpu_units = (millis * 1024).div_ceil(1000);
    let memory_mib = bytes.div_ceil(1 << 20);
    for &(cpu, low, high, step) in SIZES {
        if cpu < cpu_units || high < memory_mib {
            continue;
        }
        let memory = if memory_mib <= low {
            low
        } else {
            memory_mib.div_ceil(step) * step
        };
        return Ok(Size {
            cpu,
            memory_mib: memory,
        });
    }
    Err(format!(
        "resources {{cpu: {}, memory: {}}} exceed the largest Fargate task (16 vCPU, 120 GiB)",
        spec.cpu.as_deref().unwrap_or("-"),
        spec.memory.as_deref().unwrap_or("-")
    ))
}

/// The task definition family for this content: the same images, size and
/// roles give the same family on every server.
fn family(options: &FargateOptions, spec: &ContainerSpec, size: Size) -> String {
    let content = serde_json::json!({
        "layout": DEFINITION_LAYOUT,
        "image": spec.image,
        "worker_image": options.worker_image,
        "cpu": size.cpu,
        "memory": size.memory_mib,
        "execution_role": options.execution_role_arn,
        "task_role": options.task_role_arn,
        "stop_timeout": options.kill_grace.as_secs().min(MAX_STOP_TIMEOUT_SECS),
    });
    let hash = Sha256::digest(content.to_string().as_bytes());
    let hex: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("ork-{hex}")
}

/// The part of an ECS task (as DescribeTasks returns it, in its JSON wire
/// form) that says how it ended. Built from the SDK's type in the monitor
/// and deserialized from recorded responses in the tests.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct TaskView {
    last_status: Option<String>,
    stop_code: Option<String>,
    stopped_reason: Option<String>,
    /// The task's memory in MiB, as text.
    memory: Option<String>,
    containers: Vec<ContainerView>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ContainerView {
    name: Option<String>,
    image: Option<String>,
    last_status: Option<String>,
    exit_code: Option<i32>,
    reason: Option<String>,
}

impl From<&aws_sdk_ecs::types::Task> for TaskView {
    fn from(task: &aws_sdk_ecs::types::Task) -> Self {
        Self {
            last_status: task.last_status.clone(),
            stop_code: task.stop_code.as_ref().map(|c| c.as_str().to_owned()),
            stopped_reason: task.stopped_reason.clone(),
            memory: task.memory.clone(),
            containers: task
                .containers()
                .iter()
                .map(|c| ContainerView {
                    name: c.name.clone(),
                    image: c.image.clone(),
                    last_status: c.last_status.clone(),
                    exit_code: c.exit_code,
                    reason: c.reason.clone(),
                })
                .collect(),
        }
    }
}

impl TaskView {
    fn container(&self, name: &str) -> Option<&ContainerView> {
        self.containers
            .iter()
            .find(|c| c.name.as_deref() == Some(name))
    }
}

/// Whether the task is over, and why, as ECS tells it: `None` while it is
/// provisioning, pending or running.
fn ended(task: &TaskView) -> Option<End> {
    if task.last_status.as_deref() != Some("STOPPED") {
        return None;
    }
    let reason = task.stopped_reason.as_deref().unwrap_or("").trim();
    let stop_code = task.stop_code.as_deref().unwrap_or("");
    let main = task.container(TASK_CONTAINER);
    let install = task.container(INSTALL_CONTAINER);

    // An image that cannot be pulled: the task's or the worker's. ECS says
    // so in the container's reason and the task's stopped reason.
    const PULL: &str = "CannotPullContainerError";
    let pulling = [("task image", main), ("worker image", install)]
        .into_iter()
        .find(|(_, c)| {
            c.and_then(|c| c.reason.as_deref())
                .is_some_and(|r| r.contains(PULL))
        });
    if pulling.is_some() || reason.contains(PULL) {
        let (which, container) = pulling.unwrap_or(("task image", main));
        let image = container.and_then(|c| c.image.as_deref()).unwrap_or("?");
        let message = container
            .and_then(|c| c.reason.as_deref())
            .filter(|r| r.contains(PULL))
            .unwrap_or(reason);
        return Some(End {
            description: format!("cannot pull the {which} `{image}`: {message}"),
            kind: FailureKind::Dispatch,
            non_retryable: true,
        });
    }
    if let Some(c) = main
        && let Some(r) = c
            .reason
            .as_deref()
            .filter(|r| r.starts_with("OutOfMemoryError"))
    {
        let limit = task
            .memory
            .as_deref()
            .map(|m| format!(" of {m} MiB"))
            .unwrap_or_default();
        let code = c
            .exit_code
            .map(|code| format!(" (exit code {code})"))
            .unwrap_or_default();
        return Some(End {
            description: format!(
                "OutOfMemoryError: the container ran out of the task's memory{limit} and was killed{code}: {r}"
            ),
            kind: FailureKind::Task,
            non_retryable: false,
        });
    }
    // The installer failed: the worker image has no usable /ork-worker.
    if let Some(c) = install
        && let Some(code) = c.exit_code.filter(|code| *code != 0)
    {
        let image = c.image.as_deref().unwrap_or("?");
        return Some(End {
            description: format!(
                "the container installing ork-worker from `{image}` exited with code {code}; \
                 --worker-image must hold a self-contained /ork-worker"
            ),
            kind: FailureKind::Dispatch,
            non_retryable: true,
        });
    }
    match stop_code {
        "SpotInterruption" | "TerminationNotice" => {
            return Some(End::lost(format!(
                "AWS stopped the task ({stop_code}) before its worker reported a result: {reason}"
            )));
        }
        "UserInitiated" | "ServiceSchedulerInitiated" => {
            return Some(End::lost(format!(
                "the task was stopped from outside ork ({stop_code}) before its worker reported a result: {reason}"
            )));
        }
        "TaskFailedToStart" => {
            return Some(End {
                description: format!("the task failed to start: {reason}"),
                kind: FailureKind::Dispatch,
                non_retryable: false,
            });
        }
        _ => {}
    }
    let mut description = match main.and_then(|c| c.exit_code) {
        Some(code) => {
            format!("the container exited with code {code} before its worker reported a result")
        }
        None => "the task stopped before its worker reported a result".to_owned(),
    };
    if let Some(r) = main
        .and_then(|c| c.reason.as_deref())
        .filter(|r| !r.is_empty())
    {
        description.push_str(&format!(" ({r})"));
    }
    if !reason.is_empty() {
        description.push_str(": ");
        description.push_str(reason);
    }
    Some(End::lost(description))
}

/// Describes the watched tasks every few seconds and ends the attempts
/// whose task stopped, or that ECS no longer knows.
async fn monitor(client: Client, cluster: String, watchlist: Arc<Watchlist>) {
    loop {
        tokio::time::sleep(MONITOR_EVERY).await;
        if watchlist.is_closed() {
            return;
        }
        let by_arn: HashMap<String, String> = watchlist
            .snapshot()
            .into_iter()
            .filter_map(|(name, w)| Some((w.handle?, name)))
            .collect();
        let arns: Vec<String> = by_arn.keys().cloned().collect();
        for batch in arns.chunks(DESCRIBE_BATCH) {
            let out = match client
                .describe_tasks()
                .cluster(&cluster)
                .set_tasks(Some(batch.to_vec()))
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) => {
                    tracing::warn!(error = %explain(&e), "cannot describe ork's ECS tasks");
                    continue;
                }
            };
            for task in out.tasks() {
                let Some(name) = task.task_arn.as_ref().and_then(|a| by_arn.get(a)) else {
                    continue;
                };
                if let Some(end) = ended(&TaskView::from(task)) {
                    watchlist.end(name, end);
                }
            }
            for failure in out.failures() {
                if failure.reason.as_deref() != Some("MISSING") {
                    continue;
                }
                let Some(name) = failure.arn.as_ref().and_then(|a| by_arn.get(a)) else {
                    continue;
                };
                watchlist.end(
                    name,
                    End::lost("ECS no longer knows the task; its worker never reported a result"),
                );
            }
        }
    }
}

/// The tags of an attempt's task.
fn tags(labels: BTreeMap<String, String>) -> Vec<Tag> {
    labels
        .into_iter()
        .map(|(key, value)| Tag::builder().key(key).value(value).build())
        .collect()
}

#[async_trait]
impl Executor for FargateExecutor {
    async fn dispatch(&self, launch: &Launch) -> Result<(), Error> {
        let name = labels::execution_name(&launch.fence.task_run_id, launch.fence.attempt);
        let spec = launch.container.as_ref().ok_or_else(|| {
            Error::Rejected(format!(
                "task `{}` has no `image`; a fargate task needs one",
                launch.spec.task_name
            ))
        })?;
        let client = self.client().await?;
        let definition = self.task_definition(client, spec).await?;
        let env = worker_env(launch, &self.options.server_url, WORK_DIR)
            .into_iter()
            .chain(self.options.extra_env.iter().cloned())
            .map(|(name, value)| KeyValuePair::builder().name(name).value(value).build())
            .collect();
        let network = AwsVpcConfiguration::builder()
            .set_subnets(Some(self.options.subnets.clone()))
            .set_security_groups(Some(self.options.security_groups.clone()))
            .assign_public_ip(if self.options.assign_public_ip {
                AssignPublicIp::Enabled
            } else {
                AssignPublicIp::Disabled
            })
            .build()
            .map_err(|e| Error::Rejected(e.to_string()))?;
        let out = client
            .run_task()
            .cluster(&self.options.cluster)
            .task_definition(&definition)
            .launch_type(LaunchType::Fargate)
            .count(1)
            .started_by(&name)
            // RunTask is idempotent per client token: a repeated dispatch
            // of this attempt finds its first task.
            .client_token(&name)
            .network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(network)
                    .build(),
            )
            .overrides(
                TaskOverride::builder()
                    .container_overrides(
                        ContainerOverride::builder()
                            .name(TASK_CONTAINER)
                            .set_environment(Some(env))
                            .build(),
                    )
                    .build(),
            )
            .set_tags(Some(tags(labels::for_launch(
                launch,
                &self.options.server_id,
            ))))
            .send()
            .await
            .map_err(|e| {
                // The request itself is wrong (a subnet, a role): say so and
                // do not retry.
                if is_refusal(&e) {
                    Error::Rejected(format!("ECS refused the task: {}", explain(&e)))
                } else {
                    unavailable("run the task", &e)
                }
            })?;
        if let Some(failure) = out.failures().first() {
            return Err(Error::Unavailable(format!(
                "ECS could not place the task: {} {}",
                failure.reason.as_deref().unwrap_or("(no reason)"),
                failure.detail.as_deref().unwrap_or("")
            )));
        }
        let arn = out
            .tasks()
            .first()
            .and_then(|t| t.task_arn.clone())
            .ok_or_else(|| Error::Unavailable("ECS started no task and said no why".to_owned()))?;
        self.watched.watch(
            &name,
            Watched {
                fence: launch.fence.clone(),
                memory: spec.memory.clone(),
                handle: Some(arn),
            },
        );
        Ok(())
    }

    async fn cancel(&self, fence: &Fence) -> Result<(), Error> {
        let name = labels::execution_name(&fence.task_run_id, fence.attempt);
        // Whoever cancels decides the attempt's fate: no event for it.
        let watched = self.watched.unwatch(&name).and_then(|w| w.handle);
        if watched.is_none() && self.listed(&name).is_some_and(|(_, stopped)| stopped) {
            return Ok(());
        }
        let client = self.client().await?;
        let arn = match watched {
            Some(arn) => Some(arn),
            None => self.arn_of(client, &name).await?,
        };
        match arn {
            Some(arn) => self.stop(client, &arn).await,
            None => Ok(()),
        }
    }

    async fn status(&self, fence: &Fence) -> Result<ExecutionStatus, Error> {
        let name = labels::execution_name(&fence.task_run_id, fence.attempt);
        let client = self.client().await?;
        let Some(arn) = self.arn_of(client, &name).await? else {
            return Ok(ExecutionStatus::Unknown);
        };
        let out = client
            .describe_tasks()
            .cluster(&self.options.cluster)
            .tasks(arn)
            .send()
            .await
            .map_err(|e| unavailable("describe a task", &e))?;
        let Some(task) = out.tasks().first() else {
            return Ok(ExecutionStatus::Unknown);
        };
        Ok(if task.last_status.as_deref() == Some("STOPPED") {
            let code = task
                .containers()
                .iter()
                .find(|c| c.name.as_deref() == Some(TASK_CONTAINER))
                .and_then(|c| c.exit_code);
            ExecutionStatus::Exited { code }
        } else {
            ExecutionStatus::Running
        })
    }

    async fn list(&self) -> Result<Vec<Execution>, Error> {
        let client = self.client().await?;
        let mut arns = Vec::new();
        // Stopped tasks too (ECS keeps them about an hour): one that ended
        // while no server watched still fails its attempt with its reason.
        for status in [DesiredStatus::Running, DesiredStatus::Stopped] {
            let mut pages = client
                .list_tasks()
                .cluster(&self.options.cluster)
                .desired_status(status)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| unavailable("list tasks", &e))?;
                arns.extend(page.task_arns.unwrap_or_default());
            }
        }
        let mut executions = Vec::new();
        let mut listed = HashMap::new();
        for batch in arns.chunks(DESCRIBE_BATCH) {
            let out = client
                .describe_tasks()
                .cluster(&self.options.cluster)
                .set_tasks(Some(batch.to_vec()))
                .include(TaskField::Tags)
                .send()
                .await
                .map_err(|e| unavailable("describe tasks", &e))?;
            for task in out.tasks() {
                let tags: BTreeMap<String, String> = task
                    .tags()
                    .iter()
                    .filter_map(|t| Some((t.key.clone()?, t.value.clone()?)))
                    .collect();
                let env = task
                    .overrides
                    .as_ref()
                    .map(|o| o.container_overrides())
                    .unwrap_or_default()
                    .iter()
                    .filter(|o| o.name.as_deref() == Some(TASK_CONTAINER))
                    .flat_map(|o| o.environment())
                    .filter_map(|kv| Some((kv.name.clone()?, kv.value.clone()?)))
                    .collect::<Vec<_>>();
                let Some(fence) = labels::fence_of(&tags, env) else {
                    continue;
                };
                let name = labels::execution_name(&fence.task_run_id, fence.attempt);
                let running = task.last_status.as_deref() != Some("STOPPED");
                if let Some(arn) = &task.task_arn {
                    listed.insert(name.clone(), (arn.clone(), !running));
                }
                executions.push(Execution {
                    id: name,
                    fence,
                    running,
                });
            }
        }
        if let Ok(mut known) = self.listed.lock() {
            *known = listed;
        }
        Ok(executions)
    }

    async fn adopt(&self, execution: &Execution) -> Result<(), Error> {
        if self.watched.get(&execution.id).is_some() {
            return Ok(());
        }
        let client = self.client().await?;
        let Some(arn) = self.arn_of(client, &execution.id).await? else {
            return Ok(());
        };
        self.watched.adopt(
            &execution.id,
            Watched {
                fence: execution.fence.clone(),
                memory: None,
                handle: Some(arn),
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests;
