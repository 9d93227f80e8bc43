//! The Kubernetes executor: one Job per attempt, whose pod runs `ork-worker`
//! in the task's image.
//!
//! An init container from `--worker-image` copies a self-contained
//! `ork-worker` into an `emptyDir`, and the task container starts it as its
//! command, so the task's image needs nothing of ork. The worker reports over
//! gRPC to the server's advertised URL; the cluster's own view (pod phase,
//! container termination reason, pull errors, the Job's deadline) is read
//! only for attempts that end without a report. One monitor per executor
//! lists ork's Jobs and pods once a second, so watching costs the same for
//! one attempt or a thousand.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, Pod, PodSpec, PodTemplateSpec, ResourceRequirements,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams, PropagationPolicy};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use ork_domain::ImagePullPolicy;
use tokio::sync::{OnceCell, mpsc};

use super::watch::{End, Watched, Watchlist};
use super::{Error, Execution, ExecutionStatus, Executor, ExecutorEvent, Launch, labels};
use crate::state::{FailureKind, Fence};

/// Where the worker binary appears in the task container.
const WORKER_PATH: &str = "/ork/bin/ork-worker";
/// The attempt directories' parent in the task container.
const WORK_DIR: &str = "/ork/work";
/// The shared `emptyDir` holding both.
const VOLUME: &str = "ork";
/// The task container's name in the pod.
const TASK_CONTAINER: &str = "task";
/// How often the monitor reads the cluster.
const MONITOR_EVERY: Duration = Duration::from_secs(1);
/// Seconds past the task's timeout after which Kubernetes itself stops the
/// Job (`activeDeadlineSeconds`), should the server not be there to do it.
const DEADLINE_MARGIN_SECS: i64 = 60;
/// Finished Jobs the server could not delete are collected after this.
const TTL_AFTER_FINISHED_SECS: i32 = 3600;

#[derive(Debug, Clone)]
pub struct KubernetesOptions {
    /// A kubeconfig file; `None` infers (`KUBECONFIG`, `~/.kube/config`,
    /// in-cluster).
    pub kubeconfig: Option<PathBuf>,
    /// `None`: the kubeconfig's namespace, else `default`.
    pub namespace: Option<String>,
    pub service_account: Option<String>,
    /// The image whose `/ork-worker` the init container installs.
    pub worker_image: String,
    pub host_network: bool,
    /// The URL workers call back on.
    pub server_url: String,
    /// This server's id, written in the `ork/server` label.
    pub server_id: String,
    /// The pods' termination grace period.
    pub kill_grace: Duration,
    /// More variables for the worker (the TLS server name to check); a CA
    /// file on the server's host is not visible in a pod, so over TLS pods
    /// verify the server with the task image's system roots.
    pub extra_env: Vec<(String, String)>,
}

/// Runs attempts as Kubernetes Jobs.
pub struct KubernetesExecutor {
    options: KubernetesOptions,
    /// The client and namespace, made on first use, with the monitor.
    client: OnceCell<(Client, String)>,
    /// Jobs being watched, by name.
    watched: Arc<Watchlist>,
}

impl KubernetesExecutor {
    pub fn new(options: KubernetesOptions, events: mpsc::UnboundedSender<ExecutorEvent>) -> Self {
        Self {
            options,
            client: OnceCell::new(),
            watched: Arc::new(Watchlist::new(events)),
        }
    }

    async fn client(&self) -> Result<&(Client, String), Error> {
        self.client
            .get_or_try_init(|| async {
                let unavailable = |e: String| {
                    Error::Unavailable(format!(
                        "cannot reach Kubernetes: {e}; pass --kubeconfig or set KUBECONFIG"
                    ))
                };
                let config = match &self.options.kubeconfig {
                    Some(path) => {
                        let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
                            unavailable(format!("cannot read {}: {e}", path.display()))
                        })?;
                        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                            .await
                            .map_err(|e| unavailable(e.to_string()))?
                    }
                    None => Config::infer()
                        .await
                        .map_err(|e| unavailable(e.to_string()))?,
                };
                let namespace = self
                    .options
                    .namespace
                    .clone()
                    .unwrap_or_else(|| config.default_namespace.clone());
                // Several TLS providers are compiled in (other crates bring
                // their own), so the process default must be named; an
                // already installed one is kept.
                let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
                let client = Client::try_from(config).map_err(|e| unavailable(e.to_string()))?;
                tokio::spawn(monitor(
                    client.clone(),
                    namespace.clone(),
                    self.watched.clone(),
                ));
                Ok((client, namespace))
            })
            .await
    }

    fn job(&self, launch: &Launch, name: &str) -> Result<Job, Error> {
        let spec = launch.container.as_ref().ok_or_else(|| {
            Error::Rejected(format!(
                "task `{}` has no `image`; a kubernetes task needs one",
                launch.spec.task_name
            ))
        })?;
        let labels = labels::for_launch(launch, &self.options.server_id);
        let mut amounts = BTreeMap::new();
        if let Some(cpu) = &spec.cpu {
            amounts.insert("cpu".to_owned(), Quantity(cpu.clone()));
        }
        if let Some(memory) = &spec.memory {
            amounts.insert("memory".to_owned(), Quantity(memory.clone()));
        }
        let resources = (!amounts.is_empty()).then(|| ResourceRequirements {
            // Requests equal to limits: the task gets what it asked for.
            requests: Some(amounts.clone()),
            limits: Some(amounts),
            ..ResourceRequirements::default()
        });
        let mount = VolumeMount {
            name: VOLUME.to_owned(),
            mount_path: "/ork".to_owned(),
            ..VolumeMount::default()
        };
        let env = labels::worker_env(launch, &self.options.server_url, WORK_DIR)
            .into_iter()
            .chain(self.options.extra_env.iter().cloned())
            .map(|(name, value)| EnvVar {
                name,
                value: Some(value),
                ..EnvVar::default()
            })
            .collect();
        let pull_policy = match spec.pull_policy {
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::Never => "Never",
        };
        let grace = i64::try_from(self.options.kill_grace.as_secs()).unwrap_or(30);
        let pod = PodSpec {
            restart_policy: Some("Never".to_owned()),
            service_account_name: self.options.service_account.clone(),
            host_network: self.options.host_network.then_some(true),
            termination_grace_period_seconds: Some(grace),
            volumes: Some(vec![Volume {
                name: VOLUME.to_owned(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            }]),
            init_containers: Some(vec![Container {
                name: "ork-worker".to_owned(),
                image: Some(self.options.worker_image.clone()),
                image_pull_policy: Some("IfNotPresent".to_owned()),
                command: Some(vec![
                    "/ork-worker".to_owned(),
                    "install".to_owned(),
                    WORKER_PATH.to_owned(),
                ]),
                volume_mounts: Some(vec![mount.clone()]),
                ..Container::default()
            }]),
            containers: vec![Container {
                name: TASK_CONTAINER.to_owned(),
                image: Some(spec.image.clone()),
                image_pull_policy: Some(pull_policy.to_owned()),
                // `command` replaces the image's entrypoint and its default
                // arguments.
                command: Some(vec![WORKER_PATH.to_owned()]),
                args: Some(Vec::new()),
                env: Some(env),
                resources,
                volume_mounts: Some(vec![mount]),
                ..Container::default()
            }],
            ..PodSpec::default()
        };
        Ok(Job {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some(labels.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(JobSpec {
                // ork retries attempts itself, each as a new Job.
                backoff_limit: Some(0),
                active_deadline_seconds: Some(
                    i64::from(launch.spec.timeout_seconds) + DEADLINE_MARGIN_SECS,
                ),
                ttl_seconds_after_finished: Some(TTL_AFTER_FINISHED_SECS),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(pod),
                },
                ..JobSpec::default()
            }),
            ..Job::default()
        })
    }
}

/// Reads ork's Jobs and pods once a second and ends the watched attempts
/// whose pod ended (or cannot start).
async fn monitor(client: Client, namespace: String, watchlist: Arc<Watchlist>) {
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let selector = ListParams::default().labels(labels::TASK_RUN);
    loop {
        tokio::time::sleep(MONITOR_EVERY).await;
        if watchlist.is_closed() {
            return;
        }
        let watched = watchlist.snapshot();
        if watched.is_empty() {
            continue;
        }
        let (job_list, pod_list) = match tokio::join!(jobs.list(&selector), pods.list(&selector)) {
            (Ok(j), Ok(p)) => (j.items, p.items),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot list ork's Jobs and pods");
                continue;
            }
        };
        let job_by_name: HashMap<String, &Job> = job_list
            .iter()
            .filter_map(|j| j.metadata.name.clone().map(|n| (n, j)))
            .collect();
        for (name, w) in watched {
            let pod = pod_list.iter().find(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("job-name"))
                    .is_some_and(|n| *n == name)
            });
            let Some(end) = ended(job_by_name.get(&name).copied(), pod, w.memory.as_deref()) else {
                continue;
            };
            if !watchlist.end(&name, end) {
                continue;
            }
            delete_job(&jobs, &name, None).await;
        }
    }
}

/// Whether the Job's attempt is over: its pod ended, cannot pull its image,
/// was evicted, or the Job failed (its deadline) or is gone.
fn ended(job: Option<&Job>, pod: Option<&Pod>, memory: Option<&str>) -> Option<End> {
    let Some(job) = job else {
        return Some(End {
            description: "the Job was deleted from the cluster before its worker reported a result"
                .to_owned(),
            kind: FailureKind::Lost,
            non_retryable: false,
        });
    };
    let status = pod.and_then(|p| p.status.as_ref());
    let task = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == TASK_CONTAINER));
    let init = status
        .and_then(|s| s.init_container_statuses.as_ref())
        .and_then(|c| c.first());
    // An image that cannot be pulled: the task's, or the worker's.
    for (which, container) in [("task image", task), ("worker image", init)] {
        let waiting = container
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.waiting.as_ref());
        if let Some(waiting) = waiting
            && let Some(reason) = waiting.reason.as_deref()
            && matches!(
                reason,
                "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull"
            )
        {
            let image = container.map(|c| c.image.as_str()).unwrap_or_default();
            return Some(End {
                description: format!(
                    "cannot pull the {which} `{image}`: {reason}: {}",
                    waiting.message.as_deref().unwrap_or("no message")
                ),
                kind: FailureKind::Dispatch,
                non_retryable: true,
            });
        }
    }
    let terminated = task
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    if let Some(t) = terminated {
        if t.reason.as_deref() == Some("OOMKilled") {
            let limit = memory.map(|m| format!(" of {m}")).unwrap_or_default();
            return Some(End {
                description: format!(
                    "OOMKilled: the container ran out of its memory limit{limit} and was killed (exit code {})",
                    t.exit_code
                ),
                kind: FailureKind::Task,
                non_retryable: false,
            });
        }
        let mut description = format!(
            "the container exited with code {} before its worker reported a result",
            t.exit_code
        );
        if let Some(reason) = t
            .reason
            .as_deref()
            .filter(|r| *r != "Completed" && *r != "Error")
        {
            description.push_str(&format!(" ({reason})"));
        }
        if let Some(message) = t.message.as_deref().filter(|m| !m.is_empty()) {
            description.push_str(": ");
            description.push_str(message);
        }
        return Some(End {
            description,
            kind: FailureKind::Lost,
            non_retryable: false,
        });
    }
    let phase = status.and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Failed" | "Succeeded")) {
        let reason = status
            .and_then(|s| s.reason.as_deref())
            .unwrap_or("no reason given");
        let message = status.and_then(|s| s.message.as_deref()).unwrap_or("");
        return Some(End {
            description: format!(
                "the pod ended ({reason}) before its worker reported a result: {message}"
            )
            .trim_end_matches([':', ' '])
            .to_owned(),
            kind: FailureKind::Lost,
            non_retryable: false,
        });
    }
    // The Job's own end, e.g. its deadline, which removes the pod.
    let failed = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Failed" && c.status == "True"));
    if let Some(condition) = failed {
        let reason = condition.reason.as_deref().unwrap_or("Failed");
        let kind = if reason == "DeadlineExceeded" {
            FailureKind::Timeout
        } else {
            FailureKind::Lost
        };
        return Some(End {
            description: format!(
                "the Job failed ({reason}): {}",
                condition.message.as_deref().unwrap_or("no message")
            ),
            kind,
            non_retryable: false,
        });
    }
    None
}

async fn delete_job(jobs: &Api<Job>, name: &str, grace: Option<u32>) {
    // Foreground: the Job goes only once its pods are gone, so nothing of
    // the attempt outlives its deletion.
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        grace_period_seconds: grace,
        ..DeleteParams::default()
    };
    match jobs.delete(name, &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => tracing::warn!(job = %name, error = %e, "cannot delete a Job"),
    }
}

/// The container of a Job's pod that runs the task (not the init container
/// that installs `ork-worker`).
fn task_container(job: &Job) -> Option<&Container> {
    job.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == TASK_CONTAINER)
}

fn memory_of(job: &Job) -> Option<String> {
    task_container(job)?
        .resources
        .as_ref()?
        .limits
        .as_ref()?
        .get("memory")
        .map(|q| q.0.clone())
}

#[async_trait]
impl Executor for KubernetesExecutor {
    async fn dispatch(&self, launch: &Launch) -> Result<(), Error> {
        let name = labels::execution_name(&launch.fence.task_run_id, launch.fence.attempt);
        let job = self.job(launch, &name)?;
        let (client, namespace) = self.client().await?;
        let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
        match jobs.create(&PostParams::default(), &job).await {
            Ok(_) => {}
            // Created by an earlier dispatch of this very attempt.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(kube::Error::Api(e)) if e.code == 422 || e.code == 403 => {
                return Err(Error::Rejected(format!(
                    "Kubernetes refused the Job: {}",
                    e.message
                )));
            }
            Err(e) => {
                return Err(Error::Unavailable(format!(
                    "cannot create the Job in namespace {namespace}: {e}"
                )));
            }
        }
        self.watched.watch(
            &name,
            Watched {
                fence: launch.fence.clone(),
                memory: launch.container.as_ref().and_then(|c| c.memory.clone()),
                handle: None,
            },
        );
        Ok(())
    }

    async fn cancel(&self, fence: &Fence) -> Result<(), Error> {
        let execution_id = labels::execution_name(&fence.task_run_id, fence.attempt);
        let execution_id = execution_id.as_str();
        let (client, namespace) = self.client().await?;
        // Whoever cancels decides the attempt's fate: no event for it.
        self.watched.unwatch(execution_id);
        let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
        let grace = u32::try_from(self.options.kill_grace.as_secs()).unwrap_or(30);
        delete_job(&jobs, execution_id, Some(grace)).await;
        Ok(())
    }

    async fn status(&self, fence: &Fence) -> Result<ExecutionStatus, Error> {
        let execution_id = labels::execution_name(&fence.task_run_id, fence.attempt);
        let execution_id = execution_id.as_str();
        let (client, namespace) = self.client().await?;
        let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
        match jobs.get_opt(execution_id).await {
            Ok(None) => Ok(ExecutionStatus::Unknown),
            Ok(Some(job)) => {
                let status = job.status.unwrap_or_default();
                Ok(if status.succeeded.unwrap_or(0) > 0 {
                    ExecutionStatus::Exited { code: Some(0) }
                } else if status.failed.unwrap_or(0) > 0 {
                    ExecutionStatus::Exited { code: None }
                } else {
                    ExecutionStatus::Running
                })
            }
            Err(e) => Err(Error::Unavailable(format!(
                "cannot read Job {execution_id}: {e}"
            ))),
        }
    }

    async fn list(&self) -> Result<Vec<Execution>, Error> {
        let (client, namespace) = self.client().await?;
        let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
        let list = jobs
            .list(&ListParams::default().labels(labels::TASK_RUN))
            .await
            .map_err(|e| Error::Unavailable(format!("cannot list ork's Jobs: {e}")))?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|job| {
                let name = job.metadata.name.clone()?;
                let labels = job.metadata.labels.clone().unwrap_or_default();
                let env = task_container(&job)?
                    .env
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|e| (e.name, e.value.unwrap_or_default()));
                let fence = labels::fence_of(&labels, env)?;
                let finished = job
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| {
                        c.iter().any(|c| {
                            (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True"
                        })
                    });
                Some(Execution {
                    id: name,
                    fence,
                    running: !finished && job.metadata.deletion_timestamp.is_none(),
                })
            })
            .collect())
    }

    async fn adopt(&self, execution: &Execution) -> Result<(), Error> {
        let (client, namespace) = self.client().await?;
        let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
        let memory = jobs
            .get_opt(&execution.id)
            .await
            .ok()
            .flatten()
            .as_ref()
            .and_then(memory_of);
        self.watched.adopt(
            &execution.id,
            Watched {
                fence: execution.fence.clone(),
                memory,
                handle: None,
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, PodStatus,
    };

    use super::*;

    fn pod(task: ContainerState) -> Pod {
        Pod {
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: TASK_CONTAINER.to_owned(),
                    image: "img:1".to_owned(),
                    state: Some(task),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn a_running_pod_has_not_ended() {
        let job = Job::default();
        assert_eq!(ended(Some(&job), None, None), None);
        let running = pod(ContainerState::default());
        assert_eq!(ended(Some(&job), Some(&running), None), None);
    }

    #[test]
    fn ends_say_why() {
        let job = Job::default();
        let oom = pod(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 137,
                reason: Some("OOMKilled".into()),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        });
        let end = ended(Some(&job), Some(&oom), Some("64Mi")).expect("ended");
        assert_eq!(
            end.description,
            "OOMKilled: the container ran out of its memory limit of 64Mi and was killed (exit code 137)"
        );
        assert_eq!((end.kind, end.non_retryable), (FailureKind::Task, false));

        let pull = pod(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ErrImagePull".into()),
                message: Some("not found".into()),
            }),
            ..ContainerState::default()
        });
        let end = ended(Some(&job), Some(&pull), None).expect("ended");
        assert_eq!(
            end.description,
            "cannot pull the task image `img:1`: ErrImagePull: not found"
        );
        assert!(end.non_retryable);

        let deadline = Job {
            status: Some(JobStatus {
                conditions: Some(vec![JobCondition {
                    type_: "Failed".into(),
                    status: "True".into(),
                    reason: Some("DeadlineExceeded".into()),
                    message: Some("Job was active longer than specified deadline".into()),
                    ..JobCondition::default()
                }]),
                ..JobStatus::default()
            }),
            ..Job::default()
        };
        let end = ended(Some(&deadline), None, None).expect("ended");
        assert_eq!(end.kind, FailureKind::Timeout);
        assert!(end.description.contains("DeadlineExceeded"));
        assert_eq!(
            ended(None, None, None).map(|e| e.kind),
            Some(FailureKind::Lost)
        );
    }
}
