//! The Docker executor: one container per attempt, with `ork-worker` as its
//! entrypoint.
//!
//! The worker binary is bind-mounted read-only from this machine (so it must
//! be self-contained: statically linked), the task's image only provides the
//! programs the task runs. The container gets the attempt's coordinates in
//! its environment and calls back to the server like any launched worker;
//! the engine's own view (exit code, `OOMKilled`) only matters for attempts
//! that end without a report. Every container carries ork's labels
//! ([`super::labels`]), so a restarted server can find, adopt or remove it.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, ContainerStateStatusEnum, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use futures::StreamExt as _;
use ork_domain::{ImagePullPolicy, quantity};
use tokio::sync::{OnceCell, mpsc};

use super::{
    ContainerSpec, Error, Execution, ExecutionStatus, Executor, ExecutorEvent, Launch, labels,
};
use crate::state::{FailureKind, Fence};

/// Where the worker binary appears inside every container.
const WORKER_PATH: &str = "/ork/bin/ork-worker";
/// The attempt directories' parent inside the container (a tmpfs).
const WORK_DIR: &str = "/ork/work";
/// How many of the container's last log lines explain an unreported exit.
const LOG_TAIL: &str = "20";
/// How long engine calls may take before the engine counts as unreachable.
const ENGINE_TIMEOUT_SECS: u64 = 120;

#[derive(Debug, Clone)]
pub struct DockerOptions {
    /// The engine: `unix:///var/run/docker.sock`, `tcp://HOST:2375`; `None`
    /// means the engine's own default socket.
    pub host: Option<String>,
    /// A self-contained `ork-worker`, bind-mounted into every container.
    pub worker_binary: PathBuf,
    /// The URL workers call back on (the server's advertised URL).
    pub server_url: String,
    /// This server's id, written in the `ork/server` label.
    pub server_id: String,
    /// The containers' network mode; `host` lets a worker reach a server on
    /// this machine's loopback.
    pub network: String,
    /// Time between SIGTERM and SIGKILL when an attempt is stopped.
    pub kill_grace: Duration,
    /// Most containers running at once.
    pub max_running: u32,
    /// How workers verify a TLS server; its files are bind-mounted into
    /// every container, as the worker binary is, since paths on the server's
    /// host are not visible inside.
    pub tls: Option<WorkerTls>,
}

/// What a worker in a container needs to call back over TLS.
#[derive(Debug, Clone)]
pub struct WorkerTls {
    /// The CA (PEM) the worker trusts the server with.
    pub ca: PathBuf,
    /// The name to check the certificate for; `None` checks the callback
    /// URL's host (an `--advertise-url`).
    pub server_name: Option<String>,
    /// The client certificate and key (PEM) under mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// Where the TLS files are mounted in a container.
const TLS_CA_PATH: &str = "/ork/tls/ca.pem";
const TLS_CERT_PATH: &str = "/ork/tls/client.pem";
const TLS_KEY_PATH: &str = "/ork/tls/client.key";

impl WorkerTls {
    /// The bind mounts (`host:container:ro`) and variables for a container.
    fn mounts_and_env(&self) -> (Vec<String>, Vec<String>) {
        let bind = |host: &PathBuf, inside: &str| format!("{}:{inside}:ro", host.display());
        let mut binds = vec![bind(&self.ca, TLS_CA_PATH)];
        let mut env = vec![format!("ORK_CA_CERT={TLS_CA_PATH}")];
        if let Some(name) = &self.server_name {
            env.push(format!("ORK_TLS_SERVER_NAME={name}"));
        }
        if let Some((cert, key)) = &self.identity {
            binds.push(bind(cert, TLS_CERT_PATH));
            binds.push(bind(key, TLS_KEY_PATH));
            env.push(format!("ORK_CLIENT_CERT={TLS_CERT_PATH}"));
            env.push(format!("ORK_CLIENT_KEY={TLS_KEY_PATH}"));
        }
        (binds, env)
    }
}

/// Runs attempts as containers of one Docker engine.
pub struct DockerExecutor {
    options: DockerOptions,
    /// Connected (and API version negotiated) on first use, so a server
    /// without Docker starts fine and only Docker tasks fail.
    client: OnceCell<Docker>,
    shared: Arc<Shared>,
}

/// What the executor and its watchers share.
struct Shared {
    events: mpsc::UnboundedSender<ExecutorEvent>,
    /// Containers with a watcher, by name.
    watched: Mutex<HashSet<String>>,
    /// Containers stopped on purpose: whoever stopped them decides the
    /// attempt's fate, so their end raises no event.
    cancelled: Mutex<HashSet<String>>,
}

impl DockerExecutor {
    pub fn new(options: DockerOptions, events: mpsc::UnboundedSender<ExecutorEvent>) -> Self {
        Self {
            options,
            client: OnceCell::new(),
            shared: Arc::new(Shared {
                events,
                watched: Mutex::new(HashSet::new()),
                cancelled: Mutex::new(HashSet::new()),
            }),
        }
    }

    async fn client(&self) -> Result<&Docker, Error> {
        self.client
            .get_or_try_init(|| async {
                let unreachable = |e: DockerError| {
                    Error::Unavailable(format!(
                        "cannot reach the Docker engine at {}: {e}; start it, or point --docker-host (DOCKER_HOST) at it",
                        self.options.host.as_deref().unwrap_or("its default socket")
                    ))
                };
                let docker = match &self.options.host {
                    Some(host) => Docker::connect_with_host(host),
                    None => Docker::connect_with_defaults(),
                }
                .map_err(unreachable)?
                .with_timeout(Duration::from_secs(ENGINE_TIMEOUT_SECS));
                // Speak the engine's API version when it is older than ours.
                docker.negotiate_version().await.map_err(unreachable)
            })
            .await
    }

    /// Makes sure the image is there, as the pull policy says. A failed pull
    /// is final for the attempt: the engine's message says why.
    async fn ensure_image(&self, docker: &Docker, spec: &ContainerSpec) -> Result<(), Error> {
        let present = match docker.inspect_image(&spec.image).await {
            Ok(_) => true,
            Err(e) if status_of(&e) == Some(404) => false,
            Err(e) => return Err(engine_error("inspect image", &spec.image, &e)),
        };
        let pull = match spec.pull_policy {
            ImagePullPolicy::Always => true,
            ImagePullPolicy::IfNotPresent => !present,
            ImagePullPolicy::Never if present => false,
            ImagePullPolicy::Never => {
                return Err(Error::Rejected(format!(
                    "image `{}` is not in the Docker engine and `image_pull_policy` is `never`; \
                     build or load it there first, or allow pulls",
                    spec.image
                )));
            }
        };
        if pull {
            let options = CreateImageOptionsBuilder::new()
                .from_image(&spec.image)
                .build();
            let mut progress = docker.create_image(Some(options), None, None);
            while let Some(item) = progress.next().await {
                if let Err(e) = item {
                    return Err(Error::Rejected(format!(
                        "cannot pull image `{}`: {}",
                        spec.image,
                        message_of(&e)
                    )));
                }
            }
        }
        Ok(())
    }

    fn container_body(
        &self,
        launch: &Launch,
        spec: &ContainerSpec,
    ) -> Result<ContainerCreateBody, Error> {
        let memory = spec
            .memory
            .as_deref()
            .map(quantity::memory_bytes)
            .transpose()
            .map_err(Error::Rejected)?
            .map(|b| i64::try_from(b).unwrap_or(i64::MAX));
        let nano_cpus = spec
            .cpu
            .as_deref()
            .map(quantity::cpu_millis)
            .transpose()
            .map_err(Error::Rejected)?
            .map(|m| i64::try_from(m.saturating_mul(1_000_000)).unwrap_or(i64::MAX));
        let mut env: Vec<String> = labels::worker_env(launch, &self.options.server_url, WORK_DIR)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut binds = vec![format!(
            "{}:{WORKER_PATH}:ro",
            self.options.worker_binary.display()
        )];
        if let Some(tls) = &self.options.tls {
            let (tls_binds, tls_env) = tls.mounts_and_env();
            binds.extend(tls_binds);
            env.extend(tls_env);
        }
        Ok(ContainerCreateBody {
            image: Some(spec.image.clone()),
            // Replacing the entrypoint also drops the image's default command.
            entrypoint: Some(vec![WORKER_PATH.to_owned()]),
            env: Some(env),
            labels: Some(
                labels::for_launch(launch, &self.options.server_id)
                    .into_iter()
                    .collect(),
            ),
            host_config: Some(HostConfig {
                binds: Some(binds),
                tmpfs: Some(HashMap::from([(
                    WORK_DIR.to_owned(),
                    "rw,exec,nosuid,mode=1777".to_owned(),
                )])),
                network_mode: Some(self.options.network.clone()),
                // A real init as PID 1 reaps whatever the task leaves behind.
                init: Some(true),
                memory,
                // The same as `memory`: no swap beyond the limit.
                memory_swap: memory,
                nano_cpus,
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        })
    }

    fn watch(&self, docker: &Docker, name: &str, fence: Fence, memory: Option<String>) {
        {
            let Ok(mut watched) = self.shared.watched.lock() else {
                return;
            };
            if !watched.insert(name.to_owned()) {
                return;
            }
        }
        tokio::spawn(watch(
            docker.clone(),
            self.shared.clone(),
            name.to_owned(),
            fence,
            memory,
        ));
    }
}

/// Waits for a container to end, then raises its event (unless it was
/// stopped on purpose) and removes it.
async fn watch(
    docker: Docker,
    shared: Arc<Shared>,
    name: String,
    fence: Fence,
    memory: Option<String>,
) {
    let mut backoff = Duration::from_millis(200);
    let ended = loop {
        let options = WaitContainerOptionsBuilder::new()
            .condition("not-running")
            .build();
        // The stream's error for a non-zero exit is not a failure to wait.
        let _ = docker.wait_container(&name, Some(options)).next().await;
        match docker.inspect_container(&name, None).await {
            Ok(info) => {
                let state = info.state.unwrap_or_default();
                let running = matches!(
                    state.status,
                    Some(
                        ContainerStateStatusEnum::RUNNING
                            | ContainerStateStatusEnum::CREATED
                            | ContainerStateStatusEnum::RESTARTING
                    )
                );
                if !running {
                    break Some(state);
                }
            }
            Err(e) if status_of(&e) == Some(404) => break None,
            Err(e) => {
                tracing::warn!(container = %name, error = %e, "cannot inspect a container; retrying")
            }
        }
        // The wait ended without the container ending: the engine restarted
        // or the connection dropped. Wait again.
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    };
    let cancelled = shared
        .cancelled
        .lock()
        .map(|mut c| c.remove(&name))
        .unwrap_or(false);
    if !cancelled {
        let tail = log_tail(&docker, &name).await;
        let (description, kind) = describe_end(ended.as_ref(), memory.as_deref(), &tail);
        let _ = shared.events.send(ExecutorEvent::Exited {
            fence,
            description,
            kind,
            non_retryable: false,
        });
    }
    remove(&docker, &name).await;
    if let Ok(mut watched) = shared.watched.lock() {
        watched.remove(&name);
    }
}

/// What an ended container says about an attempt that did not report.
fn describe_end(
    state: Option<&bollard::models::ContainerState>,
    memory: Option<&str>,
    tail: &[String],
) -> (String, FailureKind) {
    let Some(state) = state else {
        return (
            "the container was removed from the Docker engine before its worker reported a result"
                .to_owned(),
            FailureKind::Lost,
        );
    };
    let code = state.exit_code.unwrap_or(-1);
    let mut text;
    let kind;
    if state.oom_killed == Some(true) {
        let limit = memory.map(|m| format!(" of {m}")).unwrap_or_default();
        text = format!(
            "OOMKilled: the container ran out of its memory limit{limit} and was killed (exit code {code})"
        );
        kind = FailureKind::Task;
    } else {
        text = format!("the container exited with code {code} before its worker reported a result");
        kind = FailureKind::Lost;
    }
    if let Some(error) = state.error.as_deref().filter(|e| !e.is_empty()) {
        text.push_str(&format!(" ({error})"));
    }
    if !tail.is_empty() {
        text.push_str(":\n");
        text.push_str(&tail.join("\n"));
    }
    (text, kind)
}

async fn log_tail(docker: &Docker, name: &str) -> Vec<String> {
    let options = LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .tail(LOG_TAIL)
        .build();
    let mut lines = Vec::new();
    let mut stream = docker.logs(name, Some(options));
    while let Some(Ok(chunk)) = stream.next().await {
        let text = String::from_utf8_lossy(&chunk.into_bytes()).into_owned();
        lines.extend(text.lines().map(str::to_owned));
    }
    let keep = lines.len().saturating_sub(20);
    lines.split_off(keep)
}

async fn remove(docker: &Docker, name: &str) {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(name, Some(options)).await {
        Ok(()) => {}
        Err(e) if matches!(status_of(&e), Some(404 | 409)) => {}
        Err(e) => tracing::warn!(container = %name, error = %e, "cannot remove a container"),
    }
}

fn status_of(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The engine's own words when it gave some.
fn message_of(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        DockerError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

fn engine_error(what: &str, subject: &str, e: &DockerError) -> Error {
    Error::Unavailable(format!(
        "Docker engine: cannot {what} `{subject}`: {}",
        message_of(e)
    ))
}

#[async_trait]
impl Executor for DockerExecutor {
    async fn dispatch(&self, launch: &Launch) -> Result<(), Error> {
        let spec = launch.container.as_ref().ok_or_else(|| {
            Error::Rejected(format!(
                "task `{}` has no `image`; a docker task needs one",
                launch.spec.task_name
            ))
        })?;
        let docker = self.client().await?;
        self.ensure_image(docker, spec).await?;
        let name = labels::execution_name(&launch.fence.task_run_id, launch.fence.attempt);
        let body = self.container_body(launch, spec)?;
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        match docker.create_container(Some(options), body).await {
            Ok(_) => {}
            // Created by an earlier dispatch of this very attempt.
            Err(e) if status_of(&e) == Some(409) => {}
            Err(e) => {
                return Err(Error::Rejected(format!(
                    "cannot create the container for image `{}`: {}",
                    spec.image,
                    message_of(&e)
                )));
            }
        }
        if let Err(e) = docker.start_container(&name, None).await {
            let message = message_of(&e);
            remove(docker, &name).await;
            return Err(Error::Rejected(format!(
                "cannot start the container (image `{}`, worker {} at {WORKER_PATH}): {message}",
                spec.image,
                self.options.worker_binary.display()
            )));
        }
        self.watch(docker, &name, launch.fence.clone(), spec.memory.clone());
        Ok(())
    }

    async fn cancel(&self, fence: &Fence) -> Result<(), Error> {
        let execution_id = labels::execution_name(&fence.task_run_id, fence.attempt);
        let execution_id = execution_id.as_str();
        let docker = self.client().await?.clone();
        if let Ok(mut cancelled) = self.shared.cancelled.lock() {
            cancelled.insert(execution_id.to_owned());
        }
        let grace = i32::try_from(self.options.kill_grace.as_secs()).unwrap_or(i32::MAX);
        let name = execution_id.to_owned();
        let shared = self.shared.clone();
        // The worker gets SIGTERM (and passes it to the task), then the
        // engine kills what is left; callers must not wait for that.
        tokio::spawn(async move {
            let options = StopContainerOptionsBuilder::new().t(grace).build();
            if let Err(e) = docker.stop_container(&name, Some(options)).await
                && !matches!(status_of(&e), Some(304 | 404))
            {
                tracing::warn!(container = %name, error = %e, "cannot stop a container");
            }
            // A container nobody watches (an orphan) is removed here; a
            // watched one by its watcher, once it saw the end.
            let watched = shared.watched.lock().is_ok_and(|w| w.contains(&name));
            if !watched {
                remove(&docker, &name).await;
                if let Ok(mut cancelled) = shared.cancelled.lock() {
                    cancelled.remove(&name);
                }
            }
        });
        Ok(())
    }

    async fn status(&self, fence: &Fence) -> Result<ExecutionStatus, Error> {
        let execution_id = labels::execution_name(&fence.task_run_id, fence.attempt);
        let execution_id = execution_id.as_str();
        let docker = self.client().await?;
        match docker.inspect_container(execution_id, None).await {
            Ok(info) => {
                let state = info.state.unwrap_or_default();
                Ok(if state.running == Some(true) {
                    ExecutionStatus::Running
                } else {
                    ExecutionStatus::Exited {
                        code: state.exit_code.and_then(|c| i32::try_from(c).ok()),
                    }
                })
            }
            Err(e) if status_of(&e) == Some(404) => Ok(ExecutionStatus::Unknown),
            Err(e) => Err(engine_error("inspect container", execution_id, &e)),
        }
    }

    fn free_slots(&self) -> Option<u32> {
        let running = self.shared.watched.lock().map(|w| w.len()).unwrap_or(0);
        Some(
            self.options
                .max_running
                .saturating_sub(u32::try_from(running).unwrap_or(u32::MAX)),
        )
    }

    async fn list(&self) -> Result<Vec<Execution>, Error> {
        let docker = self.client().await?;
        let filters = HashMap::from([("label", vec![labels::TASK_RUN])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = docker
            .list_containers(Some(options))
            .await
            .map_err(|e| engine_error("list containers", "ork's", &e))?;
        let mut found = Vec::with_capacity(summaries.len());
        for summary in summaries {
            let Some(id) = summary.id else { continue };
            let info = match docker.inspect_container(&id, None).await {
                Ok(info) => info,
                Err(e) if status_of(&e) == Some(404) => continue,
                Err(e) => return Err(engine_error("inspect container", &id, &e)),
            };
            let name = info
                .name
                .as_deref()
                .unwrap_or(&id)
                .trim_start_matches('/')
                .to_owned();
            let config = info.config.unwrap_or_default();
            let labels = config.labels.unwrap_or_default().into_iter().collect();
            let env = config.env.unwrap_or_default().into_iter().filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
            });
            let Some(fence) = labels::fence_of(&labels, env) else {
                continue;
            };
            let state = info.state.unwrap_or_default();
            found.push(Execution {
                id: name,
                fence,
                running: matches!(
                    state.status,
                    Some(
                        ContainerStateStatusEnum::RUNNING
                            | ContainerStateStatusEnum::CREATED
                            | ContainerStateStatusEnum::RESTARTING
                    )
                ),
            });
        }
        Ok(found)
    }

    async fn adopt(&self, execution: &Execution) -> Result<(), Error> {
        let docker = self.client().await?;
        let memory = match docker.inspect_container(&execution.id, None).await {
            Ok(info) => info
                .host_config
                .and_then(|h| h.memory)
                .filter(|m| *m > 0)
                .map(|m| format!("{m} bytes")),
            Err(_) => None,
        };
        self.watch(docker, &execution.id, execution.fence.clone(), memory);
        Ok(())
    }
}

/// Whether the ELF file at `path` asks for a dynamic loader (a `PT_INTERP`
/// program header); `None` when it cannot be read as a 64-bit ELF file.
pub fn is_dynamically_linked(path: &std::path::Path) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    use std::io::Read as _;
    // The ELF header and the program headers that follow it are all this
    // needs: a few KiB, not the (possibly large, debug) binary.
    const HEAD: u64 = 64 * 1024;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(HEAD)
        .read_to_end(&mut bytes)
        .ok()?;
    if bytes.get(..5)? != b"\x7fELF\x02" {
        return None;
    }
    let u16_at = |at: usize| {
        bytes
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let phoff = bytes
        .get(0x20..0x28)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    let phoff = usize::try_from(phoff).ok()?;
    Some((0..phnum).any(|i| u32_at(phoff + i * phentsize) == Some(PT_INTERP)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_files_are_mounted_and_named_by_their_paths_inside() {
        let tls = WorkerTls {
            ca: PathBuf::from("/etc/ork/ca.pem"),
            server_name: Some("localhost".to_owned()),
            identity: Some((
                PathBuf::from("/etc/ork/worker.pem"),
                PathBuf::from("/etc/ork/worker.key"),
            )),
        };
        let (binds, env) = tls.mounts_and_env();
        assert_eq!(
            binds,
            [
                "/etc/ork/ca.pem:/ork/tls/ca.pem:ro",
                "/etc/ork/worker.pem:/ork/tls/client.pem:ro",
                "/etc/ork/worker.key:/ork/tls/client.key:ro",
            ]
        );
        assert_eq!(
            env,
            [
                "ORK_CA_CERT=/ork/tls/ca.pem",
                "ORK_TLS_SERVER_NAME=localhost",
                "ORK_CLIENT_CERT=/ork/tls/client.pem",
                "ORK_CLIENT_KEY=/ork/tls/client.key",
            ]
        );
        let advertised = WorkerTls {
            server_name: None,
            identity: None,
            ..tls
        };
        let (binds, env) = advertised.mounts_and_env();
        assert_eq!(binds, ["/etc/ork/ca.pem:/ork/tls/ca.pem:ro"]);
        assert_eq!(env, ["ORK_CA_CERT=/ork/tls/ca.pem"]);
    }

    #[test]
    fn the_test_binary_is_dynamically_linked() {
        let exe = std::env::current_exe().expect("test executable");
        assert_eq!(is_dynamically_linked(&exe), Some(true));
        assert_eq!(
            is_dynamically_linked(std::path::Path::new("/nonexistent")),
            None
        );
    }

    #[test]
    fn an_oom_kill_is_a_task_failure_and_says_so() {
        let state = bollard::models::ContainerState {
            oom_killed: Some(true),
            exit_code: Some(137),
            ..Default::default()
        };
        let (text, kind) = describe_end(Some(&state), Some("16Mi"), &["tail".to_owned()]);
        assert_eq!(
            text,
            "OOMKilled: the container ran out of its memory limit of 16Mi and was killed (exit code 137):\ntail"
        );
        assert_eq!(kind, FailureKind::Task);
        let exited = bollard::models::ContainerState {
            exit_code: Some(1),
            ..Default::default()
        };
        let (text, kind) = describe_end(Some(&exited), None, &[]);
        assert_eq!(
            text,
            "the container exited with code 1 before its worker reported a result"
        );
        assert_eq!(kind, FailureKind::Lost);
    }
}
