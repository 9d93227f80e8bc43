//! The client side of a benchmark: gRPC clients, warm pool workers (Rust in
//! this process, Python as a child process), and readings of ork's own task
//! records.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ork_proto::v1;
use ork_proto::v1::run_service_client::RunServiceClient;
use ork_proto::v1::token_service_client::TokenServiceClient;
use ork_proto::v1::worker_service_client::WorkerServiceClient;
use ork_proto::v1::workflow_service_client::WorkflowServiceClient;
use ork_worker::connect::{AuthChannel, ConnectOptions};
use ork_worker::pool::{Context, TaskError, Worker, task};
use tokio::io::AsyncBufReadExt as _;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::server::ServerProc;

/// Largest message a client accepts: the run of a 10,000-way fan-out.
const MAX_MESSAGE: usize = 256 << 20;

/// Clients of the server under test: deploys and runs with its admin token,
/// worker calls with its worker token.
#[derive(Clone)]
pub struct Api {
    pub runs: RunServiceClient<AuthChannel>,
    pub workflows: WorkflowServiceClient<AuthChannel>,
    pub workers: WorkerServiceClient<AuthChannel>,
}

/// A connection that sends `token` (none: nothing) with every call.
pub async fn channel(url: &str, token: Option<&str>) -> anyhow::Result<AuthChannel> {
    let options = ConnectOptions {
        token: token.map(str::to_owned),
        ..ConnectOptions::default()
    };
    Ok(InterceptedService::new(
        plain_channel(url).await?,
        options.bearer()?,
    ))
}

/// A worker token made with `admin`, for the harness's pool workers.
pub async fn create_worker_token(url: &str, admin: &str) -> anyhow::Result<String> {
    let mut tokens = TokenServiceClient::new(channel(url, Some(admin)).await?);
    Ok(tokens
        .create_token(v1::CreateTokenRequest {
            name: "bench-workers".to_owned(),
            role: "worker".to_owned(),
            expires_in_seconds: 0,
        })
        .await
        .context("create a worker token")?
        .into_inner()
        .secret)
}

async fn plain_channel(url: &str) -> anyhow::Result<Channel> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match Channel::from_shared(url.to_owned())?
            .tcp_nodelay(true)
            .connect()
            .await
        {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => bail!("cannot connect to {url}: {e}"),
        }
    }
}

impl Api {
    pub async fn connect(server: &ServerProc) -> anyhow::Result<Self> {
        let admin = channel(&server.url, server.admin_token.as_deref()).await?;
        let worker = channel(&server.url, server.worker_token.as_deref()).await?;
        Ok(Self {
            runs: RunServiceClient::new(admin.clone()).max_decoding_message_size(MAX_MESSAGE),
            workflows: WorkflowServiceClient::new(admin).max_encoding_message_size(MAX_MESSAGE),
            workers: WorkerServiceClient::new(worker).max_decoding_message_size(MAX_MESSAGE),
        })
    }

    pub async fn deploy(&mut self, yaml: &str, files: &[(&str, &str)]) -> anyhow::Result<()> {
        let files: HashMap<String, Vec<u8>> = files
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect();
        self.workflows
            .deploy_workflow(v1::DeployWorkflowRequest {
                yaml: yaml.to_owned(),
                source: "bench.yaml".to_owned(),
                files,
                ..Default::default()
            })
            .await
            .context("deploy")?;
        Ok(())
    }

    /// Starts a run; returns its id.
    pub async fn start(&mut self, workflow: &str) -> anyhow::Result<String> {
        let run = self
            .runs
            .start_run(v1::StartRunRequest {
                workflow: workflow.to_owned(),
                input: None,
                ..Default::default()
            })
            .await
            .context("start run")?
            .into_inner()
            .run
            .context("no run in StartRun's response")?;
        Ok(run.id)
    }

    /// Follows `WatchRun` until the run ends; returns its last state.
    pub async fn watch(&mut self, id: &str) -> anyhow::Result<v1::Run> {
        let mut stream = self
            .runs
            .watch_run(v1::WatchRunRequest { id: id.to_owned() })
            .await?
            .into_inner();
        while let Some(message) = stream.message().await? {
            let run = message.run.context("WatchRun message without a run")?;
            if is_over(&run.status) {
                return Ok(run);
            }
        }
        bail!("WatchRun ended before run {id} did")
    }

    /// Polls `ListRuns` (no task rows, so cheap for the server) until the run
    /// ends or `timeout` passes; returns its status.
    pub async fn poll_over(
        &mut self,
        workflow: &str,
        id: &str,
        every: Duration,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let runs = self
                .runs
                .list_runs(v1::ListRunsRequest {
                    workflow: workflow.to_owned(),
                    limit: 20,
                    ..Default::default()
                })
                .await?
                .into_inner()
                .runs;
            if let Some(run) = runs.iter().find(|r| r.id == id && is_over(&r.status)) {
                return Ok(run.status.clone());
            }
            if Instant::now() > deadline {
                bail!("run {id} did not end within {timeout:?}");
            }
            tokio::time::sleep(every).await;
        }
    }

    pub async fn get_run(&mut self, id: &str) -> anyhow::Result<v1::Run> {
        self.runs
            .get_run(v1::GetRunRequest { id: id.to_owned() })
            .await?
            .into_inner()
            .run
            .context("no run in GetRun's response")
    }
}

pub fn is_over(status: &str) -> bool {
    matches!(status, "success" | "failed" | "cancelled")
}

/// Milliseconds since the epoch of a record's timestamp.
pub fn ms(t: &Option<pbjson_types::Timestamp>) -> Option<f64> {
    t.as_ref()
        .map(|t| t.seconds as f64 * 1000.0 + f64::from(t.nanos) / 1e6)
}

/// Checks a finished run: it succeeded with `tasks` task runs, each
/// successful on its first attempt and carrying every timestamp.
pub fn check_run(run: &v1::Run, tasks: usize) -> anyhow::Result<()> {
    if run.status != "success" {
        let failed: Vec<String> = run
            .tasks
            .iter()
            .filter(|t| t.status != "success")
            .take(3)
            .map(|t| format!("{} ({}): {}", t.name, t.status, t.error))
            .collect();
        bail!("run {} ended {}: {failed:?}", run.id, run.status);
    }
    if run.tasks.len() != tasks {
        bail!(
            "run {} has {} task runs, expected {tasks}",
            run.id,
            run.tasks.len()
        );
    }
    for t in &run.tasks {
        if t.status != "success" || t.attempt != 1 {
            let earlier: Vec<String> = t
                .attempts
                .iter()
                .map(|a| format!("attempt {} {}: {}", a.attempt, a.status, a.error))
                .collect();
            bail!(
                "task {} of run {} is {} at attempt {} ({earlier:?})",
                t.name,
                run.id,
                t.status,
                t.attempt
            );
        }
        for (what, at) in [
            ("ready_at", &t.ready_at),
            ("started_at", &t.started_at),
            ("finished_at", &t.finished_at),
        ] {
            if at.is_none() {
                bail!("task {} of run {} has no {what}", t.name, run.id);
            }
        }
    }
    Ok(())
}

/// A warm Rust pool worker serving `noop` in this process.
pub struct RustWorker {
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<()>,
}

impl RustWorker {
    pub async fn start(server: &ServerProc, name: &str, slots: u32) -> anyhow::Result<Self> {
        let mut worker = Worker::new(server.url.clone()).connect_options(ConnectOptions::default());
        if let Some(token) = &server.worker_token {
            worker = worker.token(token.clone());
        }
        let worker = worker.name(name).slots(slots).task(task(
            "noop",
            |_ctx: Context, _input: serde_json::Value| async move {
                Ok::<_, TaskError>(serde_json::Value::Null)
            },
        ));
        Ok(Self::spawn(worker))
    }

    /// A worker serving only `list`, whose output is `{"items": [0, 1, ..,
    /// items - 1]}`: the source of a `for_each` of `items` instances.
    pub async fn start_lister(server: &ServerProc, items: u32) -> anyhow::Result<Self> {
        let mut worker = Worker::new(server.url.clone()).connect_options(ConnectOptions::default());
        if let Some(token) = &server.worker_token {
            worker = worker.token(token.clone());
        }
        let worker = worker.name("bench-list").slots(1).task(task(
            "list",
            move |_ctx: Context, _input: serde_json::Value| async move {
                Ok::<_, TaskError>(serde_json::json!({ "items": (0..items).collect::<Vec<u32>>() }))
            },
        ));
        Ok(Self::spawn(worker))
    }

    fn spawn(worker: Worker) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            let _ = worker
                .run(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Self { stop, handle }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        let mut handle = self.handle;
        if tokio::time::timeout(Duration::from_secs(5), &mut handle)
            .await
            .is_err()
        {
            handle.abort();
        }
    }
}

const PY_WORKER: &str = r#"
import logging
import sys
import ork

# The "attached to" line is logged at INFO; the harness waits for it.
logging.basicConfig(level=logging.INFO, format="%(message)s")

@ork.task
def noop(input):
    return None

ork.Worker(tasks=[noop], server=sys.argv[1], slots=int(sys.argv[2]), name="bench-py").run()
"#;

/// A Python pool worker (`sdks/python`) serving `noop`, as a child process.
pub struct PythonWorker {
    child: tokio::process::Child,
}

impl PythonWorker {
    /// Why the Python SDK cannot run here, if it cannot.
    pub fn unavailable(python: &Path) -> Option<String> {
        let out = std::process::Command::new(python)
            .args(["-c", "import ork, grpc"])
            .output();
        match out {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(format!(
                "`{} -c 'import ork'` fails ({}); run scripts/test-python.sh once to install the SDK",
                python.display(),
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
                    .trim()
            )),
            Err(e) => Some(format!(
                "no Python at {} ({e}); run scripts/test-python.sh once",
                python.display()
            )),
        }
    }

    pub async fn start(
        python: &Path,
        server: &ServerProc,
        dir: &Path,
        slots: u32,
    ) -> anyhow::Result<Self> {
        let script = dir.join("bench_py_worker.py");
        std::fs::write(&script, PY_WORKER)?;
        let mut child = tokio::process::Command::new(python)
            .arg(&script)
            .arg(&server.url)
            .arg(slots.to_string())
            .env(
                "ORK_TOKEN",
                server.worker_token.as_deref().unwrap_or_default(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stderr = child.stderr.take().context("python stderr")?;
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let attached = tokio::time::timeout(Duration::from_secs(30), async {
            let mut seen = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains(" attached to ") {
                    return Ok(());
                }
                seen.push(line);
            }
            bail!("the Python worker exited:\n{}", seen.join("\n"))
        })
        .await
        .context("the Python worker did not attach within 30 s")?;
        attached?;
        // Keep draining its stderr so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { child })
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}
