//! Composition root: builds every component from [`ServerOptions`] and runs
//! them until shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::header::CONTENT_TYPE;
use axum::serve::ListenerExt as _;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tower::ServiceExt as _;

use crate::ServerOptions;
use crate::api::{self, ApiContext};
use crate::auth::{self, Auth};
use crate::executor::{
    self, Executors, PoolExecutor, SubprocessExecutor, SubprocessOptions, WorkerPool,
};
use crate::metrics::Metrics;
use crate::notify::{Observer, Observers};
use crate::objects::{self, Mirror};
use crate::options::AuthMode;
use crate::reports::{QueueOptions, Reports, ReportsOptions};
use crate::scheduler::{Scheduler, SchedulerOptions};
use crate::secrets::Secrets;
use crate::state::tokens::TokenStore;
use crate::state::{self, Limits, StateStore};
use crate::telemetry::RunSpans;

/// Errors that stop a server from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("state store: {0}")]
    State(#[from] state::Error),
    #[error("object store: {0}")]
    Objects(#[from] objects::Error),
    #[error("executor: {0}")]
    Executor(#[from] executor::Error),
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("serving on {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "refusing to listen on {addr} without authentication: anyone who can reach that address could run commands on this machine; require tokens (`ork server`, or `ork dev --auth`), listen on 127.0.0.1, or accept the risk with --insecure-no-auth"
    )]
    Unprotected { addr: SocketAddr },
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::Error),
    #[error(
        "with --tls-client-ca, the ork-worker processes this server launches need a client certificate too: give --tls-worker-cert and --tls-worker-key"
    )]
    WorkerIdentityMissing,
    #[error("first admin token: {0}")]
    Bootstrap(#[from] auth::bootstrap::Error),
}

/// A bound server, ready to run.
pub struct Server {
    options: ServerOptions,
    listener: TcpListener,
    local_addr: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    bootstrap_token: Option<String>,
    tokens: Arc<dyn TokenStore>,
    state: Arc<dyn StateStore>,
    objects: Arc<dyn object_store::ObjectStore>,
    worker_binary: PathBuf,
    metrics: Metrics,
}

impl Server {
    /// Opens the stores and binds the listener; fails fast on bad configuration.
    pub async fn bind(options: ServerOptions) -> Result<Self, Error> {
        if options.auth.mode == AuthMode::Off && !options.listen.ip().is_loopback() {
            return Err(Error::Unprotected {
                addr: options.listen,
            });
        }
        let tls = match &options.tls {
            Some(tls) => {
                if tls.client_ca.is_some() && tls.worker_identity.is_none() {
                    return Err(Error::WorkerIdentityMissing);
                }
                Some(crate::tls::server_config(tls)?)
            }
            None => None,
        };
        let worker_binary = find_worker_binary(options.worker_binary.as_ref())?;
        let limits = Limits {
            max_fan_out: options.max_fan_out,
            lease: options.lease,
        };
        let metrics = Metrics::new();
        let stores = state::open_stores(&options.state_url, limits).await?;
        let (state, tokens) = (stores.state, stores.tokens);
        // Metrics and run spans hang on the committed notifier: told every
        // commit's transitions and every write transaction's latency, once
        // for all backends.
        let mut observers: Vec<Arc<dyn Observer>> = vec![Arc::new(metrics.clone())];
        if let Some(sink) = &options.spans {
            observers.push(Arc::new(RunSpans::new(sink.clone())));
        }
        state
            .notifier()
            .set_observer(Arc::new(Observers(observers)));
        let bootstrap_token = match options.auth.mode {
            AuthMode::Tokens => {
                auth::bootstrap::ensure(
                    tokens.as_ref(),
                    options.auth.bootstrap_token_file.as_deref(),
                )
                .await?
            }
            AuthMode::Off | AuthMode::InsecureOff => None,
        };
        let objects = objects::open(
            &options.objects_url,
            &objects::settings_from_vars(std::env::vars()),
        )?;
        let listener = TcpListener::bind(options.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: options.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: options.listen,
            source,
        })?;
        Ok(Self {
            options,
            listener,
            local_addr,
            tls,
            bootstrap_token,
            tokens,
            state,
            objects,
            worker_binary,
            metrics,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The first admin token, when this start made it and wrote it nowhere:
    /// show it to the operator, once. The server keeps only its hash.
    pub fn bootstrap_token(&self) -> Option<&str> {
        self.bootstrap_token.as_deref()
    }

    /// Serves until `shutdown` resolves, then stops the loops and flushes the mirror.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (events_tx, events_rx) = mpsc::unbounded_channel();

        let mut callback = self.local_addr;
        if callback.ip().is_unspecified() {
            callback.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let (scheme, worker_env) = match &self.options.tls {
            Some(tls) => ("https", worker_tls_env(tls)),
            None => ("http", Vec::new()),
        };
        let notifier = self.state.notifier();
        let local_url = format!("{scheme}://{callback}");
        let advertised = self
            .options
            .advertise_url
            .clone()
            .unwrap_or_else(|| local_url.clone());
        let mut executors = Executors::default();
        self.register_containers(&mut executors, &advertised, &events_tx);
        executors.register(
            ork_domain::DEFAULT_EXECUTOR,
            Arc::new(SubprocessExecutor::new(
                SubprocessOptions {
                    worker_binary: self.worker_binary.clone(),
                    server_url: local_url,
                    extra_env: worker_env,
                    work_dir: self.options.work_dir.clone(),
                    // Longer than the worker's own grace (10 s) so it can stop its task first.
                    kill_grace: Duration::from_secs(15),
                    max_running: self.options.max_subprocesses,
                },
                events_tx,
                notifier.clone(),
            )),
        );

        let outputs: Arc<dyn crate::state::OutputStore> =
            Arc::new(crate::objects::ObjectOutputs::new(self.objects.clone()));
        self.state.set_output_store(outputs.clone());
        let secrets = Arc::new(Secrets::new(
            std::env::vars().collect::<HashMap<_, _>>(),
            self.options.secrets_dir.clone(),
            crate::secrets::EnvAllowList::new(self.options.allow_env.iter().cloned()),
            self.state.clone(),
        ));
        let pool = Arc::new(WorkerPool::new(notifier.clone()));
        let auth = Arc::new(Auth::new(
            self.options.auth.mode,
            self.tokens.clone(),
            pool.clone(),
            &self.options.limits,
        ));
        executors.register(
            ork_domain::WORKERS_EXECUTOR,
            Arc::new(PoolExecutor::new(pool.clone())),
        );
        let executors = Arc::new(executors);
        let reports = Arc::new(Reports::new(
            self.state.clone(),
            secrets.clone(),
            pool.clone(),
            outputs,
            ReportsOptions {
                inline_output_limit: self.options.inline_output_limit,
                heartbeat_interval: self.options.heartbeat_interval,
                max_log_line_bytes: self.options.limits.max_log_line_bytes,
                max_log_bytes_per_attempt: self.options.limits.max_log_bytes_per_attempt,
                max_output_bytes: self.options.limits.max_output_bytes,
                queue: QueueOptions {
                    committers: self.state.writers(),
                    ..QueueOptions::default()
                },
            },
        ));
        let mirror = Mirror::new(self.state.clone(), self.objects.clone())
            .owner(self.options.scheduler_id.clone());
        let scheduler = Scheduler::new(
            self.state.clone(),
            executors.clone(),
            pool.clone(),
            secrets.clone(),
            reports.clone(),
            SchedulerOptions {
                heartbeat_timeout: self.options.heartbeat_timeout,
                tick: self.options.tick,
                owner: self.options.scheduler_id.clone(),
                lease: self.options.lease,
                heartbeat_interval: self.options.heartbeat_interval,
                schedule_to_start_timeout: self.options.schedule_to_start_timeout,
            },
            events_rx,
        );
        let ctx = ApiContext {
            state: self.state.clone(),
            reports,
            executors,
            heartbeat_interval: self.options.heartbeat_interval,
            owner: self.options.scheduler_id.clone(),
            pool,
            ping_interval: self.options.ping_interval,
            events: api::events::EventHub::new(notifier),
            schedule_to_start_timeout: self.options.schedule_to_start_timeout,
            auth: auth.clone(),
            limits: self.options.limits.clone(),
            secrets: secrets.clone(),
            metrics: self.metrics.clone(),
        };
        let events = ctx.events.clone();
        // `/metrics` checks its own credentials (the --metrics-token, or with
        // tokens on any token that may read), so it sits outside the layer.
        let scrape = api::prometheus::router(
            ctx.clone(),
            auth.clone(),
            self.options.metrics_token.clone(),
        );
        // The web UI's own files hold no data (every datum comes from the API,
        // which the auth layer guards), so they are added outside it: a
        // browser loads the page before it can send a token.
        // Webhooks authenticate by their signature, not a token: outside
        // the auth layer too (`api/hooks.rs` checks every call).
        let hooks = api::hooks::router(ctx.clone());
        let app = crate::ui::with_ui(
            one_port_app(api::routes(ctx.clone())?, api::gateway::router(ctx))
                .layer(axum::middleware::from_fn_with_state(auth, auth::layer))
                .merge(scrape)
                .merge(hooks),
        )
        .layer(axum::middleware::from_fn(crate::telemetry::trace_request));

        let mirror_task = tokio::spawn(mirror.run(stop_rx.clone()));
        let scheduler_task = tokio::spawn(scheduler.run(stop_rx));
        tracing::info!(addr = %self.local_addr, tls = self.tls.is_some(), "ork server listening");
        if self.options.auth.mode == AuthMode::InsecureOff {
            tracing::warn!(
                addr = %self.local_addr,
                "AUTHENTICATION IS OFF (--insecure-no-auth): anyone who can reach this address can deploy workflows and run commands on this machine"
            );
        }
        let shutdown = async move {
            shutdown.await;
            // Open log follows and run watches end, so connections drain.
            events.close();
        };
        let served = match self.tls {
            Some(config) => {
                let listener =
                    crate::tls::TlsListener::new(self.listener, config).map_err(|source| {
                        Error::Serve {
                            addr: self.local_addr,
                            source,
                        }
                    })?;
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
            None => {
                let listener = self.listener.tap_io(|tcp| {
                    // As tonic does: small gRPC frames must not wait for Nagle.
                    let _ = tcp.set_nodelay(true);
                });
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
        };
        let _ = stop_tx.send(true);
        let _ = tokio::join!(mirror_task, scheduler_task);
        if let Some(sink) = &self.options.spans {
            sink.flush();
        }
        served.map_err(|source| Error::Serve {
            addr: self.local_addr,
            source,
        })
    }
}

impl Server {
    /// The `docker` and `kubernetes` executors, when built in. Neither
    /// connects yet: a server without Docker or a cluster starts, and only
    /// tasks that need one fail, saying what is missing.
    #[allow(unused_variables, clippy::unused_self)]
    fn register_containers(
        &self,
        executors: &mut Executors,
        server_url: &str,
        events: &mpsc::UnboundedSender<executor::ExecutorEvent>,
    ) {
        let containers = &self.options.containers;
        // Workers in containers reach the loopback address only on the host
        // network; there they check the same name as subprocess workers.
        // Behind --advertise-url they check the advertised host's name.
        let server_name = match (&self.options.tls, &self.options.advertise_url) {
            (Some(tls), None) => Some(tls.worker_server_name.clone()),
            _ => None,
        };
        if self.options.tls.is_some() && !server_url.starts_with("https://") {
            tracing::warn!(
                url = server_url,
                "this server serves TLS but --advertise-url is not https://: container and pod \
                 workers will not reach it"
            );
        }
        #[cfg(feature = "docker")]
        {
            let worker_binary = containers
                .worker_binary
                .clone()
                .unwrap_or_else(|| self.worker_binary.clone());
            if executor::is_dynamically_linked(&worker_binary) == Some(true) {
                tracing::warn!(
                    worker = %worker_binary.display(),
                    "this ork-worker is dynamically linked: Docker tasks will only run in images \
                     with a compatible C library; pass --container-worker with a static build"
                );
            }
            executors.register(
                ork_domain::DOCKER_EXECUTOR,
                Arc::new(executor::DockerExecutor::new(
                    executor::DockerOptions {
                        host: containers.docker_host.clone(),
                        worker_binary,
                        server_url: server_url.to_owned(),
                        server_id: self.options.scheduler_id.clone(),
                        network: containers.docker_network.clone(),
                        kill_grace: Duration::from_secs(15),
                        max_running: containers.max_containers,
                        tls: self.options.tls.as_ref().map(|tls| executor::WorkerTls {
                            ca: absolute(tls.worker_ca.as_ref().unwrap_or(&tls.cert)),
                            server_name: server_name.clone(),
                            identity: tls
                                .worker_identity
                                .as_ref()
                                .map(|(cert, key)| (absolute(cert), absolute(key))),
                        }),
                    },
                    events.clone(),
                )),
            );
        }
        #[cfg(feature = "kubernetes")]
        executors.register(
            ork_domain::KUBERNETES_EXECUTOR,
            Arc::new(executor::KubernetesExecutor::new(
                executor::KubernetesOptions {
                    kubeconfig: containers.kubeconfig.clone(),
                    namespace: containers.kube_namespace.clone(),
                    service_account: containers.kube_service_account.clone(),
                    worker_image: containers.worker_image.clone(),
                    host_network: containers.kube_host_network,
                    server_url: server_url.to_owned(),
                    server_id: self.options.scheduler_id.clone(),
                    kill_grace: Duration::from_secs(15),
                    extra_env: server_name
                        .clone()
                        .map(|name| ("ORK_TLS_SERVER_NAME".to_owned(), name))
                        .into_iter()
                        .collect(),
                },
                events.clone(),
            )),
        );
        #[cfg(feature = "fargate")]
        match containers.fargate.missing() {
            Some(fix) => executors.register_unavailable(ork_domain::FARGATE_EXECUTOR, fix),
            None => {
                let fargate = &containers.fargate;
                executors.register(
                    ork_domain::FARGATE_EXECUTOR,
                    Arc::new(executor::FargateExecutor::new(
                        executor::FargateOptions {
                            cluster: fargate.cluster.clone().unwrap_or_default(),
                            subnets: fargate.subnets.clone(),
                            security_groups: fargate.security_groups.clone(),
                            assign_public_ip: fargate.assign_public_ip,
                            region: fargate.region.clone(),
                            endpoint_url: fargate.endpoint_url.clone(),
                            execution_role_arn: fargate.execution_role_arn.clone(),
                            task_role_arn: fargate.task_role_arn.clone(),
                            worker_image: containers.worker_image.clone(),
                            server_url: server_url.to_owned(),
                            server_id: self.options.scheduler_id.clone(),
                            kill_grace: Duration::from_secs(15),
                            extra_env: server_name
                                .iter()
                                .map(|name| ("ORK_TLS_SERVER_NAME".to_owned(), name.clone()))
                                .collect(),
                        },
                        events.clone(),
                    )),
                );
            }
        }
        #[cfg(not(feature = "fargate"))]
        executors.register_unavailable(
            ork_domain::FARGATE_EXECUTOR,
            "this ork was built without the `fargate` feature".to_owned(),
        );
        #[cfg(feature = "cloudrun")]
        match (containers.cloudrun.missing(), google_credentials()) {
            (Some(fix), _) | (None, Err(fix)) => {
                executors.register_unavailable(ork_domain::CLOUDRUN_EXECUTOR, fix);
            }
            (None, Ok(auth)) => {
                let cloudrun = &containers.cloudrun;
                executors.register(
                    ork_domain::CLOUDRUN_EXECUTOR,
                    Arc::new(executor::CloudRunExecutor::new(
                        executor::CloudRunOptions {
                            project: cloudrun.project.clone().unwrap_or_default(),
                            region: cloudrun.region.clone().unwrap_or_default(),
                            endpoint: cloudrun
                                .endpoint
                                .clone()
                                .unwrap_or_else(|| executor::CLOUDRUN_DEFAULT_ENDPOINT.to_owned()),
                            auth,
                            service_account: cloudrun.service_account.clone(),
                            worker_image: containers.worker_image.clone(),
                            server_url: server_url.to_owned(),
                            extra_env: server_name
                                .iter()
                                .map(|name| ("ORK_TLS_SERVER_NAME".to_owned(), name.clone()))
                                .collect(),
                        },
                        events.clone(),
                    )),
                );
            }
        }
        #[cfg(not(feature = "cloudrun"))]
        executors.register_unavailable(
            ork_domain::CLOUDRUN_EXECUTOR,
            "this ork was built without the `cloudrun` feature".to_owned(),
        );
        #[cfg(feature = "containerapp")]
        match (
            containers.containerapp.missing(),
            executor::cloud_api::AzureCredential::from_env(),
        ) {
            (Some(fix), _) => {
                executors.register_unavailable(ork_domain::CONTAINERAPP_EXECUTOR, fix);
            }
            (None, None) => executors.register_unavailable(
                ork_domain::CONTAINERAPP_EXECUTOR,
                "set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (a service \
                 principal) for the server, or run it where the managed identity endpoint \
                 (IDENTITY_ENDPOINT, IDENTITY_HEADER) is available"
                    .to_owned(),
            ),
            (None, Some(credential)) => {
                let config = &containers.containerapp;
                executors.register(
                    ork_domain::CONTAINERAPP_EXECUTOR,
                    Arc::new(executor::ContainerAppExecutor::new(
                        executor::ContainerAppOptions {
                            subscription: config.subscription.clone().unwrap_or_default(),
                            resource_group: config.resource_group.clone().unwrap_or_default(),
                            environment: config.environment.clone().unwrap_or_default(),
                            region: config.region.clone().unwrap_or_default(),
                            endpoint: config.endpoint.clone().unwrap_or_else(|| {
                                executor::CONTAINERAPP_DEFAULT_ENDPOINT.to_owned()
                            }),
                            auth: executor::cloud_api::Auth::Azure(Arc::new(
                                executor::cloud_api::AzureToken::new(
                                    credential,
                                    executor::ARM_RESOURCE,
                                ),
                            )),
                            worker_image: containers.worker_image.clone(),
                            server_url: server_url.to_owned(),
                            extra_env: server_name
                                .iter()
                                .map(|name| ("ORK_TLS_SERVER_NAME".to_owned(), name.clone()))
                                .collect(),
                        },
                        events.clone(),
                    )),
                );
            }
        }
        #[cfg(not(feature = "containerapp"))]
        executors.register_unavailable(
            ork_domain::CONTAINERAPP_EXECUTOR,
            "this ork was built without the `containerapp` feature".to_owned(),
        );
        #[cfg(not(any(feature = "docker", feature = "kubernetes", feature = "fargate")))]
        let _ = (server_url, events, containers, server_name);
    }
}

/// Google's credential chain as object_store implements it (a
/// service-account key in `GOOGLE_APPLICATION_CREDENTIALS`, `gcloud`'s
/// application default credentials, the metadata server), for the Cloud Run
/// executor. Built from a storage client whose data calls are never used.
#[cfg(feature = "cloudrun")]
fn google_credentials() -> Result<executor::cloud_api::Auth, String> {
    object_store::gcp::GoogleCloudStorageBuilder::from_env()
        .with_bucket_name("unused")
        .build()
        .map(|store| executor::cloud_api::Auth::Google(store.credentials().clone()))
        .map_err(|e| format!("cannot read Google credentials: {e}"))
}

/// gRPC and the HTTP gateway on one port: a request whose content type is
/// `application/grpc*` goes to the gRPC services, any other to the gateway,
/// whose fallback answers unknown paths with a JSON 404.
fn one_port_app(grpc: tonic::service::Routes, rest: axum::Router) -> axum::Router {
    let grpc = grpc.prepare().into_axum_router();
    axum::Router::new().fallback_service(tower::service_fn(move |request: Request| {
        let is_grpc = request
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let target = if is_grpc { grpc.clone() } else { rest.clone() };
        target.oneshot(request)
    }))
}

/// What launched workers need to reach a TLS server: the CA to trust, the
/// name to check (they connect to loopback), and under mutual TLS their
/// client certificate. The same variables every ork client reads.
fn worker_tls_env(tls: &crate::options::TlsOptions) -> Vec<(String, String)> {
    let path = |p: &PathBuf| absolute(p).display().to_string();
    let ca = tls.worker_ca.as_ref().unwrap_or(&tls.cert);
    let mut env = vec![
        ("ORK_CA_CERT".to_owned(), path(ca)),
        (
            "ORK_TLS_SERVER_NAME".to_owned(),
            tls.worker_server_name.clone(),
        ),
    ];
    if let Some((cert, key)) = &tls.worker_identity {
        env.push(("ORK_CLIENT_CERT".to_owned(), path(cert)));
        env.push(("ORK_CLIENT_KEY".to_owned(), path(key)));
    }
    env
}

/// Absolute, so a path holds wherever the worker runs (and Docker bind
/// mounts need one).
fn absolute(path: &PathBuf) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.clone())
}

/// The `ork-worker` binary: the configured one, else the one next to this
/// executable, else the first on `PATH`.
fn find_worker_binary(configured: Option<&PathBuf>) -> Result<PathBuf, Error> {
    if let Some(path) = configured {
        return Ok(path.clone());
    }
    let name = "ork-worker";
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
    {
        for candidate in [dir.join(name), dir.join("..").join(name)] {
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(executor::Error::WorkerBinaryNotFound.into())
}
