//! The default executor: one `ork-worker` process per attempt on this machine.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

use super::{Error, ExecutionStatus, Executor, ExecutorEvent, Launch, labels};
use crate::notify::{Changes, Notifier};
use crate::state::{FailureKind, Fence};

/// How many of the worker's last stderr lines explain an unreported exit.
const STDERR_TAIL: usize = 20;

#[derive(Debug, Clone)]
pub struct SubprocessOptions {
    /// The `ork-worker` binary.
    pub worker_binary: PathBuf,
    /// The URL workers call back on.
    pub server_url: String,
    /// More variables for every worker (how to reach a TLS server).
    pub extra_env: Vec<(String, String)>,
    /// Parent of the attempts' working directories.
    pub work_dir: PathBuf,
    /// Time between SIGTERM and SIGKILL on cancel.
    pub kill_grace: Duration,
    /// Most attempts running at once on this machine; the scheduler claims
    /// no more than that, so a 10,000-way fan-out never forks 10,000 processes.
    pub max_running: u32,
}

/// Launches `ork-worker` with the attempt's spec on its stdin; it runs the
/// task's file.
pub struct SubprocessExecutor {
    options: SubprocessOptions,
    /// The worker process of each running attempt.
    running: Arc<Mutex<HashMap<Fence, u32>>>,
    events: mpsc::UnboundedSender<ExecutorEvent>,
    /// Told when a process exits: its slot is free.
    notifier: Notifier,
}

impl SubprocessExecutor {
    pub fn new(
        options: SubprocessOptions,
        events: mpsc::UnboundedSender<ExecutorEvent>,
        notifier: Notifier,
    ) -> Self {
        Self {
            options,
            running: Arc::new(Mutex::new(HashMap::new())),
            events,
            notifier,
        }
    }

    fn pid_of(&self, fence: &Fence) -> Option<u32> {
        self.running.lock().ok().and_then(|m| m.get(fence).copied())
    }
}

fn signal(pid: u32, sig: Signal, fence: &Fence) -> Result<(), Error> {
    let id = || format!("{}/{}", fence.task_run_id, fence.attempt);
    let pid = i32::try_from(pid).map_err(|_| Error::Signal {
        id: id(),
        message: format!("pid {pid} out of range"),
    })?;
    match kill(Pid::from_raw(pid), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(Error::Signal {
            id: id(),
            message: e.to_string(),
        }),
    }
}

#[async_trait]
impl Executor for SubprocessExecutor {
    async fn dispatch(&self, launch: &Launch) -> Result<(), Error> {
        let program = self.options.worker_binary.display().to_string();
        let mut child = Command::new(&self.options.worker_binary)
            .envs(labels::attempt_env(launch, &self.options.server_url))
            .env(labels::ENV_WORK_DIR, &self.options.work_dir)
            .envs(self.options.extra_env.iter().map(|(k, v)| (k, v)))
            // The claim built the spec: it goes to the worker on its stdin
            // (a pipe only it reads), so the worker does not fetch it.
            .env(labels::ENV_SPEC_STDIN, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(false)
            .spawn()
            .map_err(|source| Error::Spawn { program, source })?;
        let pid = child.id().unwrap_or_default();
        if let Ok(mut running) = self.running.lock() {
            running.insert(launch.fence.clone(), pid);
        }

        if let Some(mut stdin) = child.stdin.take() {
            let spec = prost::Message::encode_to_vec(&launch.spec);
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt as _;
                // A worker that cannot read it fetches the spec instead.
                if let Err(e) = stdin.write_all(&spec).await {
                    tracing::debug!(error = %e, "could not hand the spec to ork-worker");
                }
            });
        }
        let stderr = child.stderr.take();
        let running = self.running.clone();
        let events = self.events.clone();
        let notifier = self.notifier.clone();
        let fence = launch.fence.clone();
        tokio::spawn(async move {
            let mut tail: VecDeque<String> = VecDeque::with_capacity(STDERR_TAIL);
            if let Some(stderr) = stderr {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if tail.len() == STDERR_TAIL {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            }
            let status = child.wait().await;
            if let Ok(mut running) = running.lock() {
                running.remove(&fence);
            }
            notifier.fire(Changes::WORK);
            // Exit code 0: ork-worker settled the attempt (reported its
            // result, or the attempt was cancelled or superseded). A report
            // that it was lost would only be refused, in a transaction of
            // its own.
            if status.as_ref().is_ok_and(|s| s.success()) {
                return;
            }
            let how = match status {
                Ok(s) => match s.code() {
                    Some(code) => format!("exited with code {code}"),
                    None => format!("was killed ({s})"),
                },
                Err(e) => format!("could not be waited for: {e}"),
            };
            let mut description = format!("the ork-worker process {how} before reporting a result");
            if !tail.is_empty() {
                description.push_str(":\n");
                description.push_str(&Vec::from(tail).join("\n"));
            }
            let _ = events.send(ExecutorEvent::Exited {
                fence,
                description,
                kind: FailureKind::Lost,
                non_retryable: false,
            });
        });
        Ok(())
    }

    async fn cancel(&self, fence: &Fence) -> Result<(), Error> {
        let Some(pid) = self.pid_of(fence) else {
            return Ok(());
        };
        // The worker forwards SIGTERM to its task's process group and exits.
        signal(pid, Signal::SIGTERM, fence)?;
        let running = self.running.clone();
        let grace = self.options.kill_grace;
        let fence = fence.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let still = running.lock().ok().and_then(|m| m.get(&fence).copied());
            if still == Some(pid) {
                let _ = signal(pid, Signal::SIGKILL, &fence);
            }
        });
        Ok(())
    }

    fn free_slots(&self) -> Option<u32> {
        let running = self.running.lock().map(|m| m.len()).unwrap_or(0);
        Some(
            self.options
                .max_running
                .saturating_sub(u32::try_from(running).unwrap_or(u32::MAX)),
        )
    }

    async fn status(&self, fence: &Fence) -> Result<ExecutionStatus, Error> {
        Ok(match self.pid_of(fence) {
            Some(_) => ExecutionStatus::Running,
            None => ExecutionStatus::Unknown,
        })
    }
}
