//! `ork server`: the control plane against explicit state and object stores,
//! and the serving loop it shares with `ork dev`.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use ork_server::options::BearerToken;
use ork_server::{AuthMode, DEFAULT_LISTEN, Server, ServerOptions, TlsOptions};
use ork_worker::ConnectOptions;

use super::Context;
use super::workflow::deploy;
use crate::paths;
use crate::telemetry::{LogFormat, Telemetry};

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address for gRPC (and the HTTP gateway), e.g. 0.0.0.0:7400.
    #[arg(long, env = "ORK_LISTEN", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// State store URL: postgres://USER:PASSWORD@HOST/DB, or sqlite://PATH
    /// (relative paths are relative to where `ork server` starts).
    #[arg(long = "state", env = "ORK_STATE_URL", value_name = "URL")]
    state_url: String,
    /// Object store URL: s3://BUCKET/PREFIX, gs://..., az://...,
    /// file:///PATH or memory://.
    #[arg(long = "objects", env = "ORK_OBJECTS_URL", value_name = "URL")]
    objects_url: String,
    /// Local folder for the attempts' working directories, relative to where
    /// `ork server` starts.
    #[arg(long, env = "ORK_DATA_DIR", default_value = ".ork", value_name = "DIR")]
    data_dir: PathBuf,
    /// This replica's name on the runs it leases (default: a fresh unique
    /// name, so several `ork server`s can share one database).
    #[arg(long, env = "ORK_SCHEDULER_ID", value_name = "NAME")]
    scheduler_id: Option<String>,
    #[command(flatten)]
    security: SecurityArgs,
    #[command(flatten)]
    tuning: TuningArgs,
}

/// Authentication, TLS and `from_env` flags, shared by `ork server` and
/// `ork dev`.
#[derive(Debug, Args)]
#[command(next_help_heading = "Security")]
pub struct SecurityArgs {
    /// Serve without authentication, on any address. Anyone who reaches the
    /// port can then deploy workflows and run commands on this machine; a
    /// warning is printed at every start.
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// File holding the first admin token: registered when the file exists,
    /// else a fresh token is written there (mode 0600) when the server has no
    /// token yet. Without it, the first start prints the token once.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure_no_auth")]
    pub bootstrap_token_file: Option<PathBuf>,
    /// Serve TLS (gRPC and REST on the one port) with this PEM certificate
    /// chain, leaf first.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this PEM CA (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// The CA launched ork-worker processes trust this server with (default:
    /// the --tls-cert file, enough for a self-signed certificate or a file
    /// holding the chain).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_worker_ca: Option<PathBuf>,
    /// The name launched workers check the certificate for; they connect
    /// over loopback.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "localhost",
        requires = "tls_cert"
    )]
    tls_worker_name: String,
    /// Client certificate launched workers present under --tls-client-ca.
    #[arg(long, value_name = "FILE", requires_all = ["tls_client_ca", "tls_worker_key"])]
    tls_worker_cert: Option<PathBuf>,
    /// The key of --tls-worker-cert.
    #[arg(long, value_name = "FILE", requires = "tls_worker_cert")]
    tls_worker_key: Option<PathBuf>,
    /// A server variable `{from_env: VAR}` may read: a name, or a pattern
    /// with `*` such as `APP_*`. Repeat it, or separate with commas. Default:
    /// none. Their values are masked in logs like secrets.
    #[arg(long = "allow-env", value_name = "PATTERN", value_delimiter = ',')]
    allow_env: Vec<String>,
}

impl SecurityArgs {
    /// Sets the TLS and `from_env` options, and the authentication mode:
    /// `--insecure-no-auth` turns it off, else `tokens` decides.
    pub fn apply(self, options: &mut ServerOptions, tokens: bool, cwd: &Path) {
        let abs = |p: PathBuf| paths::absolute(&p, cwd);
        options.auth.mode = if self.insecure_no_auth {
            AuthMode::InsecureOff
        } else if tokens || self.bootstrap_token_file.is_some() {
            AuthMode::Tokens
        } else {
            AuthMode::Off
        };
        options.auth.bootstrap_token_file = self.bootstrap_token_file.map(abs);
        if let (Some(cert), Some(key)) = (self.tls_cert, self.tls_key) {
            let mut tls = TlsOptions::new(abs(cert), abs(key));
            tls.client_ca = self.tls_client_ca.map(abs);
            tls.worker_ca = self.tls_worker_ca.map(abs);
            tls.worker_server_name = self.tls_worker_name;
            tls.worker_identity = self
                .tls_worker_cert
                .map(abs)
                .zip(self.tls_worker_key.map(abs));
            options.tls = Some(tls);
        }
        options.allow_env = self
            .allow_env
            .into_iter()
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect();
    }
}

/// Bounds on what clients send, shared by `ork server` and `ork dev`.
#[derive(Debug, Args)]
#[command(next_help_heading = "Limits")]
pub struct LimitsArgs {
    /// Largest gRPC request message [default: 67108864].
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1024..))]
    max_message_bytes: Option<u64>,
    /// Largest REST request body [default: 67108864].
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1024..))]
    max_body_bytes: Option<u64>,
    /// Largest workflow YAML [default: 1048576].
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    max_yaml_bytes: Option<u64>,
    /// Deepest YAML nesting, at most 24 [default: 24].
    #[arg(long, value_name = "LEVELS", value_parser = clap::value_parser!(u64).range(4..=24))]
    max_yaml_depth: Option<u64>,
    /// Most YAML values, each use of an alias counted [default: 100000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_yaml_nodes: Option<u64>,
    /// Most tasks in one workflow [default: 1000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_tasks: Option<u64>,
    /// Largest run input, as JSON [default: 1048576].
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(2..))]
    max_input_bytes: Option<u64>,
    /// Largest task output, as JSON [default: 33554432].
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(4..))]
    max_output_bytes: Option<u64>,
    /// Longest log line kept whole; longer ones are cut [default: 65536].
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(16..))]
    max_log_line_bytes: Option<u64>,
    /// Most log bytes one attempt stores; the rest is dropped [default: 67108864].
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    max_log_bytes_per_attempt: Option<u64>,
    /// Runs one token may start per second on average; 0 for no limit [default: 20].
    #[arg(long, value_name = "N")]
    start_run_rate: Option<u32>,
    /// Runs one token may start at once above that rate [default: 100].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    start_run_burst: Option<u32>,
}

impl LimitsArgs {
    fn apply(self, options: &mut ServerOptions) {
        let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        let limits = &mut options.limits;
        if let Some(v) = self.max_message_bytes {
            limits.max_message_bytes = size(v);
        }
        if let Some(v) = self.max_body_bytes {
            limits.max_body_bytes = size(v);
        }
        if let Some(v) = self.max_yaml_bytes {
            limits.yaml.max_bytes = size(v);
        }
        if let Some(v) = self.max_yaml_depth {
            limits.yaml.max_depth = size(v);
        }
        if let Some(v) = self.max_yaml_nodes {
            limits.yaml.max_nodes = size(v);
        }
        if let Some(v) = self.max_tasks {
            limits.yaml.max_tasks = size(v);
        }
        if let Some(v) = self.max_input_bytes {
            limits.max_input_bytes = size(v);
        }
        if let Some(v) = self.max_output_bytes {
            limits.max_output_bytes = size(v);
        }
        if let Some(v) = self.max_log_line_bytes {
            limits.max_log_line_bytes = size(v);
        }
        if let Some(v) = self.max_log_bytes_per_attempt {
            limits.max_log_bytes_per_attempt = v;
        }
        if let Some(v) = self.start_run_rate {
            limits.start_run_rate = v;
        }
        if let Some(v) = self.start_run_burst {
            limits.start_run_burst = v;
        }
    }
}

/// Flags shared by `ork server` and `ork dev`.
#[derive(Debug, Args)]
pub struct TuningArgs {
    /// Fail (and retry) a running attempt after this many seconds without a heartbeat.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    heartbeat_timeout: Option<u64>,
    /// How often workers heartbeat, in seconds.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    heartbeat_interval: Option<u64>,
    /// The `ork-worker` binary that runs subprocess tasks (default: next to
    /// `ork`, then on PATH).
    #[arg(long, env = "ORK_WORKER_BINARY", value_name = "PATH")]
    worker_binary: Option<PathBuf>,
    /// Seconds a run's lease lasts: another replica takes a run over this
    /// long after its owner stops.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    lease_seconds: Option<u64>,
    /// Most subprocess tasks running at once on this server (the rest wait
    /// in the queue).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_subprocesses: Option<u32>,
    /// Most instances one dynamic fan-out may expand to.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_fan_out: Option<u32>,
    /// Folder with one file per secret, read before `ORK_SECRET_<NAME>` variables.
    #[arg(long, env = "ORK_SECRETS_DIR", value_name = "DIR")]
    secrets_dir: Option<PathBuf>,
    /// How the server writes its log lines on stderr (json: one object per
    /// line, with the run and task ids of the request as fields).
    #[arg(long, value_enum, env = "ORK_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Export traces over OTLP/gRPC to this collector, e.g. http://127.0.0.1:4317.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// Require `Authorization: Bearer <TOKEN>` on GET /metrics (at least 16
    /// characters); without it /metrics is open like the other routes.
    #[arg(
        long,
        env = "ORK_METRICS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    metrics_token: Option<String>,
    /// Fail a pool task (`executor: workers`) after it waited this many
    /// seconds for a handler that no attached worker serves (default: wait
    /// for a worker however long it takes).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    schedule_to_start_timeout: Option<u64>,
    /// The URL workers in containers and pods call back on (default: this
    /// server's listen address, reachable only from this machine).
    #[arg(long, env = "ORK_ADVERTISE_URL", value_name = "URL")]
    advertise_url: Option<String>,
    #[command(flatten)]
    containers: ContainerArgs,
    #[command(flatten)]
    limits: LimitsArgs,
}

/// Where `executor: docker` and `executor: kubernetes` tasks run.
#[derive(Debug, Args)]
#[command(next_help_heading = "Containers")]
pub struct ContainerArgs {
    /// The Docker engine, e.g. unix:///var/run/docker.sock or tcp://HOST:2375.
    #[arg(long, env = "DOCKER_HOST", value_name = "URL")]
    docker_host: Option<String>,
    /// Network mode of task containers (`host` reaches a server on this
    /// machine's loopback).
    #[arg(long, value_name = "MODE", default_value = "host")]
    docker_network: String,
    /// Most Docker task containers running at once.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_containers: Option<u32>,
    /// A self-contained (statically linked) ork-worker to mount into task
    /// containers (default: --worker-binary).
    #[arg(long, env = "ORK_CONTAINER_WORKER", value_name = "PATH")]
    container_worker: Option<PathBuf>,
    /// Kubeconfig file (default: KUBECONFIG, ~/.kube/config, then the
    /// in-cluster service account).
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// Namespace of task Jobs (default: the kubeconfig's, else `default`).
    #[arg(long, value_name = "NAME")]
    kube_namespace: Option<String>,
    /// Service account of task pods (default: the namespace's default).
    #[arg(long, value_name = "NAME")]
    kube_service_account: Option<String>,
    /// Image of the init container that copies ork-worker into task pods; it
    /// holds a self-contained /ork-worker.
    #[arg(long, env = "ORK_WORKER_IMAGE", value_name = "IMAGE")]
    worker_image: Option<String>,
    /// Run task pods on the node's network.
    #[arg(long)]
    kube_host_network: bool,
    #[command(flatten)]
    fargate: FargateArgs,
    #[command(flatten)]
    cloudrun: CloudRunArgs,
    #[command(flatten)]
    containerapp: ContainerAppArgs,
}

/// Where `executor: containerapp` tasks run. Credentials: AZURE_TENANT_ID,
/// AZURE_CLIENT_ID and AZURE_CLIENT_SECRET, or the managed identity endpoint.
#[derive(Debug, Args)]
#[command(next_help_heading = "Azure Container Apps")]
pub struct ContainerAppArgs {
    /// The Azure subscription id of `containerapp` jobs.
    #[arg(long, env = "ORK_CONTAINERAPP_SUBSCRIPTION", value_name = "ID")]
    containerapp_subscription: Option<String>,
    /// The resource group of the jobs.
    #[arg(long, env = "ORK_CONTAINERAPP_RESOURCE_GROUP", value_name = "NAME")]
    containerapp_resource_group: Option<String>,
    /// The resource id of the Container Apps managed environment the jobs
    /// run in.
    #[arg(long, env = "ORK_CONTAINERAPP_ENVIRONMENT", value_name = "RESOURCE_ID")]
    containerapp_environment: Option<String>,
    /// The region of the jobs, e.g. westeurope.
    #[arg(long, env = "ORK_CONTAINERAPP_REGION", value_name = "REGION")]
    containerapp_region: Option<String>,
    /// Azure Resource Manager's URL (default: https://management.azure.com).
    #[arg(long, value_name = "URL")]
    containerapp_endpoint: Option<String>,
}

impl ContainerAppArgs {
    fn apply(self, config: &mut ork_server::options::ContainerAppConfig) {
        let given = |v: Option<String>| v.filter(|v| !v.is_empty());
        config.subscription = given(self.containerapp_subscription);
        config.resource_group = given(self.containerapp_resource_group);
        config.environment = given(self.containerapp_environment);
        config.region = given(self.containerapp_region);
        config.endpoint = self.containerapp_endpoint;
    }
}

/// Where `executor: cloudrun` tasks run. Credentials: GOOGLE_APPLICATION_CREDENTIALS
/// (a service-account key) or the metadata server.
#[derive(Debug, Args)]
#[command(next_help_heading = "Google Cloud Run")]
pub struct CloudRunArgs {
    /// The Google Cloud project of `cloudrun` jobs.
    #[arg(long, env = "ORK_CLOUDRUN_PROJECT", value_name = "PROJECT")]
    cloudrun_project: Option<String>,
    /// The region of the jobs, e.g. europe-west1.
    #[arg(long, env = "ORK_CLOUDRUN_REGION", value_name = "REGION")]
    cloudrun_region: Option<String>,
    /// The service account the jobs run as (default: the project's).
    #[arg(long, value_name = "EMAIL")]
    cloudrun_service_account: Option<String>,
    /// The Cloud Run Admin API's URL (default: https://run.googleapis.com).
    #[arg(long, value_name = "URL")]
    cloudrun_endpoint: Option<String>,
}

impl CloudRunArgs {
    fn apply(self, config: &mut ork_server::options::CloudRunConfig) {
        config.project = self.cloudrun_project.filter(|p| !p.is_empty());
        config.region = self.cloudrun_region.filter(|r| !r.is_empty());
        config.service_account = self.cloudrun_service_account;
        config.endpoint = self.cloudrun_endpoint;
    }
}

/// Where `executor: fargate` tasks run. AWS credentials and the region come
/// from the usual AWS environment (AWS_REGION, AWS_PROFILE, roles...).
#[derive(Debug, Args)]
#[command(next_help_heading = "AWS Fargate")]
pub struct FargateArgs {
    /// The ECS cluster of `fargate` tasks.
    #[arg(long, env = "ORK_FARGATE_CLUSTER", value_name = "NAME")]
    fargate_cluster: Option<String>,
    /// VPC subnets of the tasks, comma-separated.
    #[arg(
        long,
        env = "ORK_FARGATE_SUBNETS",
        value_name = "ID,...",
        value_delimiter = ','
    )]
    fargate_subnets: Vec<String>,
    /// Security groups of the tasks, comma-separated (default: the VPC's).
    #[arg(
        long,
        env = "ORK_FARGATE_SECURITY_GROUPS",
        value_name = "ID,...",
        value_delimiter = ','
    )]
    fargate_security_groups: Vec<String>,
    /// Give tasks a public IP (a public subnet without a NAT gateway).
    #[arg(long)]
    fargate_assign_public_ip: bool,
    /// The AWS region (default: AWS_REGION or the profile's).
    #[arg(long, value_name = "REGION")]
    fargate_region: Option<String>,
    /// The ECS API's URL (default: AWS's, or AWS_ENDPOINT_URL_ECS).
    #[arg(long, value_name = "URL")]
    fargate_endpoint_url: Option<String>,
    /// The task execution role: pulls private images, writes logs.
    #[arg(long, value_name = "ARN")]
    fargate_execution_role: Option<String>,
    /// The role the tasks' code runs as.
    #[arg(long, value_name = "ARN")]
    fargate_task_role: Option<String>,
}

impl FargateArgs {
    fn apply(self, config: &mut ork_server::options::FargateConfig) {
        let given = |list: Vec<String>| -> Vec<String> {
            list.into_iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        config.cluster = self.fargate_cluster.filter(|c| !c.is_empty());
        config.subnets = given(self.fargate_subnets);
        config.security_groups = given(self.fargate_security_groups);
        config.assign_public_ip = self.fargate_assign_public_ip;
        config.region = self.fargate_region;
        config.endpoint_url = self.fargate_endpoint_url;
        config.execution_role_arn = self.fargate_execution_role;
        config.task_role_arn = self.fargate_task_role;
    }
}

impl ContainerArgs {
    fn apply(self, options: &mut ork_server::options::ContainerOptions) {
        options.docker_host = self.docker_host.filter(|h| !h.is_empty());
        options.docker_network = self.docker_network;
        if let Some(n) = self.max_containers {
            options.max_containers = n;
        }
        options.worker_binary = self.container_worker;
        options.kubeconfig = self.kubeconfig.filter(|p| !p.as_os_str().is_empty());
        options.kube_namespace = self.kube_namespace;
        options.kube_service_account = self.kube_service_account;
        if let Some(image) = self.worker_image {
            options.worker_image = image;
        }
        options.kube_host_network = self.kube_host_network;
        self.fargate.apply(&mut options.fargate);
        self.cloudrun.apply(&mut options.cloudrun);
        self.containerapp.apply(&mut options.containerapp);
    }
}

impl TuningArgs {
    /// Starts the process's logs and trace export as these flags say.
    pub fn telemetry(&self) -> anyhow::Result<Telemetry> {
        crate::telemetry::init_server(self.log_format, self.otlp_endpoint.as_deref())
    }

    /// Sets the options given, with their paths made absolute against `cwd`.
    pub fn apply(self, options: &mut ServerOptions, cwd: &Path) -> anyhow::Result<()> {
        if let Some(secs) = self.heartbeat_timeout {
            options.heartbeat_timeout = Duration::from_secs(secs);
        }
        if let Some(secs) = self.heartbeat_interval {
            options.heartbeat_interval = Duration::from_secs(secs);
        }
        if let Some(path) = self.worker_binary {
            options.worker_binary = Some(paths::absolute_program(&path, cwd));
        }
        if let Some(secs) = self.lease_seconds {
            options.lease = Duration::from_secs(secs);
        }
        if let Some(n) = self.max_subprocesses {
            options.max_subprocesses = n;
        }
        if let Some(n) = self.max_fan_out {
            options.max_fan_out = n;
        }
        if let Some(dir) = self.secrets_dir {
            options.secrets_dir = Some(paths::absolute(&dir, cwd));
        }
        if let Some(secs) = self.schedule_to_start_timeout {
            options.schedule_to_start_timeout = Some(Duration::from_secs(secs));
        }
        if let Some(url) = self.advertise_url {
            options.advertise_url = Some(url);
        }
        self.containers.apply(&mut options.containers);
        self.limits.apply(options);
        if let Some(token) = self.metrics_token {
            options.metrics_token =
                Some(BearerToken::new(token).map_err(|e| anyhow::anyhow!("--metrics-token: {e}"))?);
        }
        Ok(())
    }
}

pub async fn run(args: ServerArgs, ctx: &Context) -> anyhow::Result<()> {
    let telemetry = args.tuning.telemetry()?;
    // Every path is made absolute here, once: the server hands them to
    // processes that run in other directories.
    let cwd = paths::current_dir()?;
    let data_dir = paths::absolute(&args.data_dir, &cwd);
    let mut options = ServerOptions::embedded(&data_dir, args.listen);
    options.spans = telemetry.spans.clone();
    options.state_url = paths::absolute_state_url(&args.state_url, &cwd);
    options.objects_url = paths::absolute_objects_url(&args.objects_url, &cwd);
    options.scheduler_id = args
        .scheduler_id
        .unwrap_or_else(ork_server::options::unique_scheduler_id);
    // A production server always requires tokens, unless told otherwise.
    args.security.apply(&mut options, true, &cwd);
    args.tuning.apply(&mut options, &cwd)?;
    let stores = format!(
        "state {}, objects {}",
        redact_url(&options.state_url),
        redact_url(&options.objects_url)
    );
    serve(
        options,
        &data_dir,
        |url| format!("ork server listening on {url} ({stores})"),
        &[],
        ctx,
    )
    .await
}

/// Binds, announces the real address on stderr (so `--listen 127.0.0.1:0`
/// is usable) and the first admin token when this start made one, deploys
/// `files` against itself, then serves until Ctrl-C or SIGTERM. A file that
/// fails to deploy stops the server: the user asked for it, so carrying on
/// would hide the error.
pub async fn serve(
    options: ServerOptions,
    data_dir: &Path,
    banner: impl FnOnce(&str) -> String,
    files: &[PathBuf],
    ctx: &Context,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let mode = options.auth.mode;
    let tls = options.tls.clone();
    let bootstrap_file = options.auth.bootstrap_token_file.clone();
    let server = Server::bind(options).await.map_err(refused)?;
    let addr = server.local_addr();
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!("{}", banner(&format!("{scheme}://{addr}")));
    eprintln!("web UI at {scheme}://{}/ui/", connect_addr(addr));
    if mode == AuthMode::InsecureOff {
        eprintln!(
            "\n\
             **********************************************************************\n\
             * WARNING: authentication is OFF (--insecure-no-auth).               *\n\
             * Anyone who can reach {addr:<45} *\n\
             * can deploy workflows and run commands on this machine.             *\n\
             **********************************************************************\n"
        );
    }
    let bootstrap = server.bootstrap_token().map(str::to_owned);
    if let Some(token) = &bootstrap {
        eprintln!(
            "created the first admin token; it is shown only now (the server keeps only its hash):\n\n    {token}\n\n\
             clients send it with --token or ORK_TOKEN; make narrower ones with `ork token create`"
        );
    }

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        tokio::select! {
            () = shutdown_signal() => {}
            _ = stop_rx => {}
        }
    };
    let running = server.run(shutdown);
    tokio::pin!(running);

    if !files.is_empty() {
        // The server deploys to itself as its own client: over TLS as its
        // launched workers do, with the first admin token when it has one.
        let mut connect = ConnectOptions {
            token: ctx.connect.token.clone(),
            ..ConnectOptions::default()
        };
        if mode == AuthMode::Tokens {
            let from_file = bootstrap_file
                .as_deref()
                .and_then(|f| std::fs::read_to_string(f).ok())
                .map(|t| t.trim().to_owned());
            if let Some(token) = bootstrap.clone().or(from_file) {
                connect.token = Some(token);
            }
        }
        if let Some(tls) = &tls {
            connect.ca_cert = Some(tls.worker_ca.clone().unwrap_or_else(|| tls.cert.clone()));
            connect.server_name = Some(tls.worker_server_name.clone());
            if let Some((cert, key)) = &tls.worker_identity {
                connect.client_cert = Some(cert.clone());
                connect.client_key = Some(key.clone());
            }
        }
        let url = format!("{scheme}://{}", connect_addr(addr));
        let deploying = deploy_all(url, connect, files);
        tokio::select! {
            result = &mut running => {
                result?;
                anyhow::bail!("the server stopped before the workflows were deployed");
            }
            result = deploying => {
                if let Err(err) = result {
                    let _ = stop_tx.send(());
                    running.await?;
                    return Err(err);
                }
            }
        }
    }
    running.await?;
    // Dropped only now: dropping the sender earlier would resolve `stop_rx`
    // and shut the server down at once.
    drop(stop_tx);
    eprintln!("ork stopped");
    Ok(())
}

/// A busy port is the most common reason a server does not start: say what
/// to do about it.
fn explain_bind(err: ork_server::Error) -> anyhow::Error {
    match &err {
        ork_server::Error::Bind { addr, source }
            if source.kind() == std::io::ErrorKind::AddrInUse =>
        {
            anyhow::anyhow!(
                "{err}\nhint: something (another `ork dev` or `ork server`?) already listens on {addr}; \
                 stop it, or pick another address with --listen (port 0 picks a free one and prints it; \
                 then point --server or ORK_SERVER at it)"
            )
        }
        _ => anyhow::Error::new(err),
    }
}

/// A server that refuses to start for want of authentication is a usage
/// error (exit 2): the command line must change.
fn refused(err: ork_server::Error) -> anyhow::Error {
    match err {
        ork_server::Error::Unprotected { .. } | ork_server::Error::WorkerIdentityMissing => {
            crate::error::usage(err.to_string())
        }
        other => explain_bind(other),
    }
}

async fn deploy_all(url: String, connect: ConnectOptions, files: &[PathBuf]) -> anyhow::Result<()> {
    let client = crate::client::connect(&url, &connect).await?;
    for file in files {
        let response = deploy::deploy_path(&client, file).await?;
        deploy::announce(&response);
    }
    Ok(())
}

/// A wildcard listen address is not something to connect to; its loopback is.
fn connect_addr(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => (Ipv4Addr::LOCALHOST, a.port()).into(),
        SocketAddr::V6(a) if a.ip().is_unspecified() => (Ipv6Addr::LOCALHOST, a.port()).into(),
        other => other,
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    eprintln!("shutting down");
}

/// Hides the password of URLs like `postgres://user:secret@host/db` before
/// they are printed.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***{}", &rest[at..])
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(
            redact_url("postgres://ork:s3cret@db:5432/ork"),
            "postgres://ork:***@db:5432/ork"
        );
        assert_eq!(
            redact_url("sqlite:///var/lib/ork.db"),
            "sqlite:///var/lib/ork.db"
        );
        assert_eq!(redact_url("file:///a@b/objects"), "file:///a@b/objects");
    }

    #[test]
    fn wildcard_addresses_connect_to_loopback() {
        assert_eq!(
            connect_addr("0.0.0.0:7400".parse().unwrap()),
            "127.0.0.1:7400".parse().unwrap()
        );
        assert_eq!(
            connect_addr("10.0.0.2:1".parse().unwrap()),
            "10.0.0.2:1".parse().unwrap()
        );
    }
}
