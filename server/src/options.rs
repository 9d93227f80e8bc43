//! Configuration of one server process, built by the CLI and passed down.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything an `ork server` / `ork dev` process is configured with. Nothing
/// below this struct reads the environment or the command line.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Address for gRPC (and later the HTTP gateway) on one port.
    pub listen: SocketAddr,
    /// `sqlite://PATH` (created when missing).
    pub state_url: String,
    /// `file:///PATH` or `memory://`.
    pub objects_url: String,
    /// The `ork-worker` binary the subprocess executor launches; `None` looks
    /// next to the running executable, then on `PATH`.
    pub worker_binary: Option<PathBuf>,
    /// Parent folder of the attempts' working directories.
    pub work_dir: PathBuf,
    /// How often workers heartbeat.
    pub heartbeat_interval: Duration,
    /// A running attempt silent for this long is failed as lost and retried.
    pub heartbeat_timeout: Duration,
    /// How often pool sessions are pinged; three unanswered pings close one.
    pub ping_interval: Duration,
    /// How often the timer loop looks for expired timeouts, retry delays and
    /// lost heartbeats. Task hand-offs never wait for it.
    pub tick: Duration,
    /// Largest number of instances a dynamic fan-out may expand to.
    pub max_fan_out: u32,
    /// Most subprocess attempts running at once on this server.
    pub max_subprocesses: u32,
    /// Outputs larger than this (as JSON) are kept in the object store and
    /// referenced from the database.
    pub inline_output_limit: usize,
    /// Folder with one file per secret (checked before `ORK_SECRET_<NAME>`).
    pub secrets_dir: Option<PathBuf>,
    /// Name of this scheduler replica, recorded as the owner of the runs it
    /// leases. A single-replica deployment keeps one stable name so that a
    /// restart resumes its runs at once instead of waiting for the lease.
    pub scheduler_id: String,
    /// How long a run's lease lasts without renewal; another replica takes
    /// the run over this long after its owner stops.
    pub lease: Duration,
    /// A pool task that no attached worker serves fails after waiting this
    /// long (its message names the handler). `None`: it waits for a worker.
    pub schedule_to_start_timeout: Option<Duration>,
    /// The URL launched workers elsewhere (containers, pods) call back on;
    /// `None` means `http://` + the bound address (loopback for a wildcard
    /// listen address), which only reaches workers on this machine.
    pub advertise_url: Option<String>,
    /// The container executors (`docker`, `kubernetes`).
    pub containers: ContainerOptions,
    /// Who may call the API.
    pub auth: AuthOptions,
    /// TLS on the one port (gRPC and REST alike); `None` serves plain text.
    pub tls: Option<TlsOptions>,
    /// The server variables `{from_env: VAR}` may read: names, or patterns
    /// with `*` (`APP_*`). Empty (the default): none.
    pub allow_env: Vec<String>,
    /// Bounds on everything a client sends.
    pub limits: ClientLimits,
    /// When set, `GET /metrics` answers only requests that carry
    /// `Authorization: Bearer <token>` (what Prometheus sends with
    /// `authorization: {credentials: ...}` in its scrape config).
    pub metrics_token: Option<BearerToken>,
    /// Where run and attempt spans are exported (`--otlp-endpoint`); `None`
    /// keeps no spans. RPC and state spans go through `tracing`.
    pub spans: Option<crate::telemetry::SpanSink>,
}

/// Whether and how callers authenticate.
#[derive(Debug, Clone, Default)]
pub struct AuthOptions {
    pub mode: AuthMode,
    /// The first admin token, in a file: registered when the file exists,
    /// else made and written there (mode 0600) when the server has no token
    /// yet. Without it, the first token is returned by
    /// [`crate::Server::bootstrap_token`] for the caller to show once.
    pub bootstrap_token_file: Option<PathBuf>,
}

/// How callers authenticate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AuthMode {
    /// No authentication; allowed only on a loopback address (`ork dev`).
    #[default]
    Off,
    /// Every call but health carries an API token (or, for a launched
    /// worker, its attempt's token).
    Tokens,
    /// No authentication on any address: `--insecure-no-auth`, warned about
    /// at every start.
    InsecureOff,
}

/// TLS for the one port, from PEM files.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by one of these
    /// CAs (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// What launched workers (`ork-worker` subprocesses) verify this server
    /// with; `None` uses `cert`, which is enough for a self-signed
    /// certificate or a file that holds its chain.
    pub worker_ca: Option<PathBuf>,
    /// The name launched workers check the certificate for (they connect to
    /// the loopback address); `localhost` by default.
    pub worker_server_name: String,
    /// The client certificate and key launched workers present under mutual
    /// TLS.
    pub worker_identity: Option<(PathBuf, PathBuf)>,
}

impl TlsOptions {
    /// TLS with a certificate and key, no client certificates.
    pub fn new(cert: PathBuf, key: PathBuf) -> Self {
        Self {
            cert,
            key,
            client_ca: None,
            worker_ca: None,
            worker_server_name: "localhost".to_owned(),
            worker_identity: None,
        }
    }
}

/// Bounds on what clients send; each breach is refused with an error that
/// names the limit and the option that raises it.
#[derive(Debug, Clone)]
pub struct ClientLimits {
    /// Largest gRPC request message.
    pub max_message_bytes: usize,
    /// Largest REST request body.
    pub max_body_bytes: usize,
    /// Largest workflow YAML, its nesting depth and its node count after
    /// alias expansion, and its number of tasks.
    pub yaml: ork_domain::parse::ParseLimits,
    /// Largest run input (as JSON).
    pub max_input_bytes: usize,
    /// Largest task output (as JSON); above `inline_output_limit` it is
    /// kept in the object store.
    pub max_output_bytes: usize,
    /// Longest log line; longer lines are cut with a marker.
    pub max_log_line_bytes: usize,
    /// Most log bytes one attempt may store; later lines are dropped after a
    /// marker line.
    pub max_log_bytes_per_attempt: u64,
    /// Runs one token may start per second on average (0: no limit) ...
    pub start_run_rate: u32,
    /// ... and at once above that rate.
    pub start_run_burst: u32,
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 << 20,
            max_body_bytes: 64 << 20,
            yaml: ork_domain::parse::ParseLimits::default(),
            max_input_bytes: 1 << 20,
            max_output_bytes: 32 << 20,
            max_log_line_bytes: 64 << 10,
            max_log_bytes_per_attempt: 64 << 20,
            start_run_rate: 20,
            start_run_burst: 100,
        }
    }
}

/// How the container executors reach their engines and start workers.
#[derive(Debug, Clone)]
pub struct ContainerOptions {
    /// The Docker engine (`unix:///var/run/docker.sock`, `tcp://HOST:2375`);
    /// `None` means the engine's default socket.
    pub docker_host: Option<String>,
    /// Network mode of task containers; `host` lets them reach a server on
    /// this machine's loopback.
    pub docker_network: String,
    /// Most Docker containers running at once on this server.
    pub max_containers: u32,
    /// A self-contained (statically linked) `ork-worker` that the Docker
    /// executor bind-mounts into containers; `None` means `worker_binary`.
    pub worker_binary: Option<PathBuf>,
    /// A kubeconfig file; `None` means `KUBECONFIG`, `~/.kube/config`, or
    /// the in-cluster service account, in that order.
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the Jobs; `None` means the kubeconfig's, else `default`.
    pub kube_namespace: Option<String>,
    /// Service account of the Jobs' pods; `None` means the namespace's default.
    pub kube_service_account: Option<String>,
    /// The image whose init container copies `ork-worker` into each pod; it
    /// holds a self-contained `/ork-worker`.
    pub worker_image: String,
    /// Run pods on the node's network (to reach a server on the node's
    /// loopback, as in a one-machine cluster).
    pub kube_host_network: bool,
    /// Where `fargate` tasks run.
    pub fargate: FargateConfig,
    /// Where `cloudrun` tasks run.
    pub cloudrun: CloudRunConfig,
    /// Where `containerapp` tasks run.
    pub containerapp: ContainerAppConfig,
}

/// Where `executor: containerapp` tasks run (`--containerapp-*`).
/// Credentials: `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and
/// `AZURE_CLIENT_SECRET` (a service principal), else the managed identity
/// endpoint (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`).
#[derive(Debug, Clone, Default)]
pub struct ContainerAppConfig {
    /// The Azure subscription id; `None` leaves the executor unconfigured.
    pub subscription: Option<String>,
    pub resource_group: Option<String>,
    /// The Container Apps managed environment's resource id.
    pub environment: Option<String>,
    /// The jobs' region, e.g. `westeurope`.
    pub region: Option<String>,
    /// Resource Manager's URL; `None` is `https://management.azure.com`.
    pub endpoint: Option<String>,
}

impl ContainerAppConfig {
    /// What is missing for `containerapp` tasks to run, as a fix to apply.
    pub fn missing(&self) -> Option<String> {
        let missing: Vec<&str> = [
            (
                self.subscription.is_none(),
                "--containerapp-subscription ID",
            ),
            (
                self.resource_group.is_none(),
                "--containerapp-resource-group NAME",
            ),
            (
                self.environment.is_none(),
                "--containerapp-environment RESOURCE_ID",
            ),
            (self.region.is_none(), "--containerapp-region REGION"),
        ]
        .into_iter()
        .filter_map(|(missing, option)| missing.then_some(option))
        .collect();
        (!missing.is_empty()).then(|| {
            format!(
                "start the server with {} (credentials come from AZURE_TENANT_ID, \
                 AZURE_CLIENT_ID and AZURE_CLIENT_SECRET, or the managed identity endpoint)",
                missing.join(" and ")
            )
        })
    }
}

/// Where `executor: cloudrun` tasks run (`--cloudrun-*`). Credentials are
/// Google's usual chain: `GOOGLE_APPLICATION_CREDENTIALS` (a service-account
/// key), `gcloud`'s application default credentials, else the metadata
/// server.
#[derive(Debug, Clone, Default)]
pub struct CloudRunConfig {
    /// The Google Cloud project; `None` leaves the executor unconfigured.
    pub project: Option<String>,
    /// The region of the jobs, e.g. `europe-west1`.
    pub region: Option<String>,
    /// The service account the jobs run as (default: the project's).
    pub service_account: Option<String>,
    /// The Admin API's URL; `None` is `https://run.googleapis.com`.
    pub endpoint: Option<String>,
}

impl CloudRunConfig {
    /// What is missing for `cloudrun` tasks to run, as a fix to apply.
    pub fn missing(&self) -> Option<String> {
        (self.project.is_none() || self.region.is_none()).then(|| {
            "start the server with --cloudrun-project PROJECT and --cloudrun-region REGION \
             (credentials come from GOOGLE_APPLICATION_CREDENTIALS or the metadata server)"
                .to_owned()
        })
    }
}

/// Where `executor: fargate` tasks run (`--fargate-*`). Credentials come
/// from AWS's usual chain (environment, profile, web identity, container
/// or instance role); the region from `region`, else `AWS_REGION` or the
/// profile.
#[derive(Debug, Clone, Default)]
pub struct FargateConfig {
    /// The ECS cluster; `None` leaves the executor unconfigured.
    pub cluster: Option<String>,
    /// VPC subnets of the tasks (at least one).
    pub subnets: Vec<String>,
    /// Security groups of the tasks; none means the VPC's default group.
    pub security_groups: Vec<String>,
    pub assign_public_ip: bool,
    pub region: Option<String>,
    /// The ECS API's URL (a VPC endpoint, an emulator); `None` is AWS's,
    /// or `AWS_ENDPOINT_URL_ECS`.
    pub endpoint_url: Option<String>,
    pub execution_role_arn: Option<String>,
    pub task_role_arn: Option<String>,
}

impl FargateConfig {
    /// What is missing for `fargate` tasks to run, as a fix to apply.
    pub fn missing(&self) -> Option<String> {
        match (&self.cluster, self.subnets.is_empty()) {
            (None, _) => Some(
                "start the server with --fargate-cluster NAME and --fargate-subnets ID[,ID...] \
                 (AWS credentials and region come from the usual AWS environment)"
                    .to_owned(),
            ),
            (Some(_), true) => Some(
                "start the server with --fargate-subnets ID[,ID...]: the VPC subnets of the tasks"
                    .to_owned(),
            ),
            (Some(_), false) => None,
        }
    }
}

/// The default `--worker-image`.
pub const DEFAULT_WORKER_IMAGE: &str = concat!("ork-worker:", env!("CARGO_PKG_VERSION"));

impl Default for ContainerOptions {
    fn default() -> Self {
        Self {
            docker_host: None,
            docker_network: "host".to_owned(),
            max_containers: 64,
            worker_binary: None,
            kubeconfig: None,
            kube_namespace: None,
            kube_service_account: None,
            worker_image: DEFAULT_WORKER_IMAGE.to_owned(),
            kube_host_network: false,
            fargate: FargateConfig::default(),
            cloudrun: CloudRunConfig::default(),
            containerapp: ContainerAppConfig::default(),
        }
    }
}

impl ServerOptions {
    /// The embedded default: SQLite and a local object folder under `data_dir`.
    pub fn embedded(data_dir: &Path, listen: SocketAddr) -> Self {
        Self {
            listen,
            state_url: format!("sqlite://{}", data_dir.join("ork.db").display()),
            objects_url: format!("file://{}", data_dir.join("objects").display()),
            worker_binary: None,
            work_dir: data_dir.join("work"),
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_timeout: Duration::from_secs(30),
            ping_interval: Duration::from_secs(5),
            tick: Duration::from_millis(500),
            max_fan_out: 10_000,
            max_subprocesses: 64,
            inline_output_limit: 256 * 1024,
            secrets_dir: None,
            scheduler_id: "local".to_owned(),
            lease: Duration::from_secs(15),
            metrics_token: None,
            spans: None,
            schedule_to_start_timeout: None,
            advertise_url: None,
            containers: ContainerOptions::default(),
            auth: AuthOptions::default(),
            tls: None,
            allow_env: Vec::new(),
            limits: ClientLimits::default(),
        }
    }
}

/// A bearer token a route requires. Its `Debug` hides the value, so
/// printing the options never leaks it.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl BearerToken {
    /// A token of at least 16 characters without whitespace (shorter ones
    /// are guessable; whitespace cannot travel in the header).
    pub fn new(token: impl Into<String>) -> Result<Self, String> {
        let token = token.into();
        let token = token.trim().to_owned();
        if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(
                "the metrics token must be at least 16 characters, without spaces".to_owned(),
            );
        }
        Ok(Self(token))
    }

    /// Whether an `Authorization` header value carries this token, compared
    /// in constant time.
    pub fn admits(&self, authorization: Option<&[u8]>) -> bool {
        let Some(given) = authorization.and_then(|v| v.strip_prefix(b"Bearer ")) else {
            return false;
        };
        let expected = self.0.as_bytes();
        if given.len() != expected.len() {
            return false;
        }
        given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(***)")
    }
}

/// A fresh replica name, for deployments with several `ork server`s.
pub fn unique_scheduler_id() -> String {
    format!("sched-{}", uuid::Uuid::now_v7().simple())
}

/// The default address of `ork dev` and `ork server`, and of clients.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7400";

#[cfg(test)]
mod tests {

    #[test]
    fn containerapp_options_missing_name_every_option_to_pass() {
        let fix = ContainerAppConfig::default()
            .missing()
            .expect("unconfigured");
        for option in [
            "--containerapp-subscription",
            "--containerapp-resource-group",
            "--containerapp-environment",
            "--containerapp-region",
            "AZURE_CLIENT_SECRET",
        ] {
            assert!(fix.contains(option), "{option} in {fix}");
        }
        let partial = ContainerAppConfig {
            subscription: Some("sub".into()),
            resource_group: Some("rg".into()),
            ..ContainerAppConfig::default()
        };
        let fix = partial.missing().expect("still missing two");
        assert!(!fix.contains("--containerapp-subscription"), "{fix}");
        assert!(
            fix.contains("--containerapp-environment RESOURCE_ID and --containerapp-region REGION"),
            "{fix}"
        );
        let full = ContainerAppConfig {
            environment: Some("/subscriptions/sub/...".into()),
            region: Some("westeurope".into()),
            ..partial
        };
        assert_eq!(full.missing(), None);
    }

    use super::*;

    #[test]
    fn a_bearer_token_admits_only_itself() {
        let token = BearerToken::new("0123456789abcdef-xyz").expect("valid");
        assert!(token.admits(Some(b"Bearer 0123456789abcdef-xyz")));
        assert!(!token.admits(Some(b"Bearer 0123456789abcdef-xy")));
        assert!(!token.admits(Some(b"Basic 0123456789abcdef-xyz")));
        assert!(!token.admits(None));
        assert_eq!(format!("{token:?}"), "BearerToken(***)");
        assert!(BearerToken::new("short").is_err());
        assert!(BearerToken::new("has a space in it, long").is_err());
    }
}
