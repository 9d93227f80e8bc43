//! Support for end-to-end tests: a real server on an ephemeral port (in this
//! process, or as an `ork dev` child process), real gRPC clients, and the
//! `ork` CLI run as a subprocess.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ork_proto::json::{from_proto_opt, to_proto};
use ork_proto::v1;
use ork_proto::v1::event_service_client::EventServiceClient;
use ork_proto::v1::run_service_client::RunServiceClient;
use ork_proto::v1::schedule_service_client::ScheduleServiceClient;
use ork_proto::v1::token_service_client::TokenServiceClient;
use ork_proto::v1::worker_service_client::WorkerServiceClient;
use ork_proto::v1::workflow_service_client::WorkflowServiceClient;
use ork_worker::connect::{AuthChannel, ConnectOptions};

pub mod certs;

pub mod containers;
pub mod mirror;
pub mod postgres;

/// Folder holding the built binaries (`ork`, `ork-worker`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps folder");
    deps.parent().expect("target profile folder").to_path_buf()
}

/// Path of a built binary; panics with the command to build it.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` before the end-to-end tests",
        path.display()
    );
    path
}

/// Fast timers so tests about heartbeats and retries finish quickly.
pub fn test_options(data_dir: &Path) -> ork_server::ServerOptions {
    let mut options =
        ork_server::ServerOptions::embedded(data_dir, "127.0.0.1:0".parse().expect("addr"));
    options.worker_binary = Some(binary("ork-worker"));
    options.heartbeat_interval = Duration::from_secs(1);
    options.heartbeat_timeout = Duration::from_secs(5);
    options.tick = Duration::from_millis(100);
    options
}

/// [`test_options`] with tokens required; the first admin token is written
/// to `admin.token` in the data folder ([`TestServer::admin_token`]).
pub fn secure_options(data_dir: &Path) -> ork_server::ServerOptions {
    let mut options = test_options(data_dir);
    options.auth.mode = ork_server::AuthMode::Tokens;
    options.auth.bootstrap_token_file = Some(data_dir.join("admin.token"));
    options
}

/// A server running inside the test process on an ephemeral port.
pub struct TestServer {
    pub addr: SocketAddr,
    pub data_dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let options = test_options(data_dir.path());
        Self::start_with(data_dir, options).await
    }

    pub async fn start_with(
        data_dir: tempfile::TempDir,
        options: ork_server::ServerOptions,
    ) -> Self {
        let server = ork_server::Server::bind(options)
            .await
            .expect("server binds");
        let addr = server.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .expect("server runs");
        });
        Self {
            addr,
            data_dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn clients(&self) -> Clients {
        Clients::connect(&self.url()).await
    }

    /// Clients that send `token`.
    pub async fn clients_with_token(&self, token: &str) -> Clients {
        Clients::connect_with(&self.url(), &ConnectOptions::default().with_token(token)).await
    }

    /// The first admin token of a server started with [`secure_options`].
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("admin.token"))
            .expect("admin.token: start the server with secure_options")
            .trim()
            .to_owned()
    }

    /// Stops the server and waits for its loops to end.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self.data_dir, dir)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// gRPC clients of every service.
#[derive(Clone)]
pub struct Clients {
    pub workflows: WorkflowServiceClient<AuthChannel>,
    pub runs: RunServiceClient<AuthChannel>,
    pub workers: WorkerServiceClient<AuthChannel>,
    pub tokens: TokenServiceClient<AuthChannel>,
    pub schedules: ScheduleServiceClient<AuthChannel>,
    pub events: EventServiceClient<AuthChannel>,
}

impl Clients {
    pub async fn connect(url: &str) -> Self {
        Self::connect_with(url, &ConnectOptions::default()).await
    }

    /// Connects with a token and TLS settings, retrying until the server
    /// answers (it may still be starting).
    pub async fn connect_with(url: &str, options: &ConnectOptions) -> Self {
        let deadline = Instant::now() + Duration::from_secs(20);
        let endpoint = options.endpoint(url).expect("connection settings");
        let channel = loop {
            match endpoint.connect().await {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot connect to {url}: {e}"),
            }
        };
        let channel = tonic::service::interceptor::InterceptedService::new(
            channel,
            options.bearer().expect("token"),
        );
        Self {
            workflows: WorkflowServiceClient::new(channel.clone())
                .max_encoding_message_size(64 << 20),
            runs: RunServiceClient::new(channel.clone()),
            workers: WorkerServiceClient::new(channel.clone()).max_encoding_message_size(64 << 20),
            tokens: TokenServiceClient::new(channel.clone()),
            schedules: ScheduleServiceClient::new(channel.clone()),
            events: EventServiceClient::new(channel),
        }
    }

    /// Makes a token of `role` (the clients must carry an admin token).
    pub async fn create_token(
        &mut self,
        name: &str,
        role: &str,
        expires_in_seconds: u32,
    ) -> String {
        self.tokens
            .create_token(v1::CreateTokenRequest {
                name: name.to_owned(),
                role: role.to_owned(),
                expires_in_seconds,
            })
            .await
            .expect("create token")
            .into_inner()
            .secret
    }

    /// Deploys a workflow from YAML text and named files.
    pub async fn deploy(
        &mut self,
        yaml: &str,
        files: &[(&str, &str)],
    ) -> Result<v1::Workflow, tonic::Status> {
        let files: HashMap<String, Vec<u8>> = files
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect();
        let response = self
            .workflows
            .deploy_workflow(v1::DeployWorkflowRequest {
                yaml: yaml.to_owned(),
                source: "test.yaml".to_owned(),
                files,
                ..Default::default()
            })
            .await?;
        Ok(response
            .into_inner()
            .workflow
            .expect("workflow in response"))
    }

    pub async fn start_run(&mut self, workflow: &str, input: serde_json::Value) -> v1::Run {
        self.runs
            .start_run(v1::StartRunRequest {
                workflow: workflow.to_owned(),
                input: Some(to_proto(&input)),
                ..Default::default()
            })
            .await
            .expect("start run")
            .into_inner()
            .run
            .expect("run in response")
    }

    pub async fn get_run(&mut self, id: &str) -> v1::Run {
        self.runs
            .get_run(v1::GetRunRequest { id: id.to_owned() })
            .await
            .expect("get run")
            .into_inner()
            .run
            .expect("run in response")
    }

    /// Polls until the run ends; panics with the run after `timeout`.
    pub async fn wait_run(&mut self, id: &str, timeout: Duration) -> v1::Run {
        let deadline = Instant::now() + timeout;
        loop {
            let run = self.get_run(id).await;
            if matches!(run.status.as_str(), "success" | "failed" | "cancelled") {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "run did not end in {timeout:?}: {run:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls until `pred` holds for the run.
    pub async fn wait_until(
        &mut self,
        id: &str,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&v1::Run) -> bool,
    ) -> v1::Run {
        let deadline = Instant::now() + timeout;
        loop {
            let run = self.get_run(id).await;
            if pred(&run) {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {run:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn logs(&mut self, run_id: &str, task: &str) -> Vec<v1::LogLine> {
        let mut cursor = String::new();
        let mut lines = Vec::new();
        loop {
            let page = self
                .runs
                .get_task_logs(v1::GetTaskLogsRequest {
                    run_id: run_id.to_owned(),
                    task: task.to_owned(),
                    cursor: cursor.clone(),
                    limit: 0,
                })
                .await
                .expect("logs")
                .into_inner();
            if page.lines.is_empty() {
                return lines;
            }
            cursor = page.next_cursor;
            lines.extend(page.lines);
        }
    }
}

/// The task runs of `run` named `name`, in index order.
pub fn tasks<'a>(run: &'a v1::Run, name: &str) -> Vec<&'a v1::TaskRun> {
    run.tasks.iter().filter(|t| t.name == name).collect()
}

/// The one task run named `name`.
pub fn task<'a>(run: &'a v1::Run, name: &str) -> &'a v1::TaskRun {
    let found = tasks(run, name);
    assert_eq!(found.len(), 1, "expected one task run `{name}` in {run:#?}");
    found[0]
}

/// A task run's output as JSON.
pub fn output(task: &v1::TaskRun) -> serde_json::Value {
    from_proto_opt(task.output.as_ref())
}

/// Runs the `ork` CLI against `server`.
pub fn ork(server: &str, args: &[&str]) -> Output {
    ork_with(server, args, &[])
}

/// Runs the `ork` CLI against `server` with more environment variables.
pub fn ork_with(server: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(binary("ork"))
        .args(args)
        .env("ORK_SERVER", server)
        .env("NO_COLOR", "1")
        .env_remove("ORK_TOKEN")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run ork")
}

/// Runs the `ork` CLI against `server` from the directory `cwd`.
pub fn ork_in(cwd: &Path, server: &str, args: &[&str]) -> Output {
    Command::new(binary("ork"))
        .args(args)
        .current_dir(cwd)
        .env("ORK_SERVER", server)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run ork")
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// An `ork dev` child process.
pub struct DevProcess {
    pub child: Child,
    pub url: String,
}

impl DevProcess {
    /// Starts `ork dev` on `port` with `data_dir` and waits until it answers.
    pub async fn start(data_dir: &Path, port: u16, extra: &[&str]) -> Self {
        Self::start_with_env(data_dir, port, extra, &[]).await
    }

    /// [`DevProcess::start`] with more environment variables (a cloud SDK's
    /// credentials and region, say).
    pub async fn start_with_env(
        data_dir: &Path,
        port: u16,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let listen = format!("127.0.0.1:{port}");
        static STARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = std::fs::File::create(data_dir.join(format!("dev-{n}.log")))
            .ok()
            .map(Stdio::from)
            .unwrap_or_else(Stdio::null);
        let child = Command::new(binary("ork"))
            .arg("dev")
            .arg("--listen")
            .arg(&listen)
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ork dev");
        let url = format!("http://{listen}");
        let _ = Clients::connect(&url).await;
        Self { child, url }
    }

    /// Starts `ork ARGS` (`dev ...` or `server ...`, which must listen on
    /// `port`) from the directory `cwd`, as a user who `cd`'d there would,
    /// and waits until it answers. Its stderr goes to `cwd/ork-N.log`.
    pub async fn start_in(cwd: &Path, port: u16, args: &[&str]) -> Self {
        static STARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log_path = cwd.join(format!("ork-{n}.log"));
        let log = std::fs::File::create(&log_path)
            .ok()
            .map(Stdio::from)
            .unwrap_or_else(Stdio::null);
        let mut child = Command::new(binary("ork"))
            .args(args)
            .current_dir(cwd)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ork");
        let url = format!("http://127.0.0.1:{port}");
        let _ = Clients::connect(&url).await;
        // `ork dev FILE…` answers before it has deployed its files (it
        // deploys to itself as a client): wait, as a user would, until it
        // has announced every one.
        let files = args
            .iter()
            .filter(|a| a.ends_with(".yaml") || a.ends_with(".yml"))
            .count();
        let deadline = Instant::now() + Duration::from_secs(120);
        while files > 0 && Instant::now() < deadline {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let announced = text
                .lines()
                .filter(|l| l.starts_with("deployed ") || l.contains(" unchanged (version "))
                .count();
            if announced >= files || matches!(child.try_wait(), Ok(Some(_))) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, url }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for DevProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
