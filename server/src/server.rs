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
use crate::executor::{
    self, Executors, PoolExecutor, SubprocessExecutor, SubprocessOptions, WorkerPool,
};
use crate::metrics::Metrics;
use crate::objects::{self, Mirror};
use crate::scheduler::{Scheduler, SchedulerOptions};
use crate::secrets::Secrets;
use crate::state::{self, CommitObserver, Limits, ObserverList, StateStore};
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
}

/// A bound server, ready to run.
pub struct Server {
    options: ServerOptions,
    listener: TcpListener,
    local_addr: SocketAddr,
    state: Arc<dyn StateStore>,
    objects: Arc<dyn object_store::ObjectStore>,
    worker_binary: PathBuf,
    metrics: Metrics,
}

impl Server {
    /// Opens the stores and binds the listener; fails fast on bad configuration.
    pub async fn bind(options: ServerOptions) -> Result<Self, Error> {
        let worker_binary = find_worker_binary(options.worker_binary.as_ref())?;
        let limits = Limits {
            max_fan_out: options.max_fan_out,
            lease: options.lease,
        };
        let metrics = Metrics::new();
        // Every store call is timed (and traced) here, once for all backends.
        let state: Arc<dyn StateStore> = Arc::new(state::Instrumented::new(
            state::open(&options.state_url, limits).await?,
            metrics.transactions(),
        ));
        let mut observers: Vec<Arc<dyn CommitObserver>> = vec![Arc::new(metrics.clone())];
        if let Some(sink) = &options.spans {
            observers.push(Arc::new(RunSpans::new(sink.clone())));
        }
        state.set_observer(Arc::new(ObserverList(observers)));
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
        let mut executors = Executors::default();
        executors.register(
            ork_domain::DEFAULT_EXECUTOR,
            Arc::new(SubprocessExecutor::new(
                SubprocessOptions {
                    worker_binary: self.worker_binary.clone(),
                    server_url: format!("http://{callback}"),
                    work_dir: self.options.work_dir.clone(),
                    // Longer than the worker's own grace (10 s) so it can stop its task first.
                    kill_grace: Duration::from_secs(15),
                    max_running: self.options.max_subprocesses,
                },
                events_tx,
            )),
        );

        let outputs: Arc<dyn crate::state::OutputStore> =
            Arc::new(crate::objects::ObjectOutputs::new(self.objects.clone()));
        self.state.set_output_store(outputs.clone());
        let secrets = Arc::new(Secrets::new(
            std::env::vars().collect::<HashMap<_, _>>(),
            self.options.secrets_dir.clone(),
            self.state.clone(),
        ));
        let pool = Arc::new(WorkerPool::default());
        executors.register(
            ork_domain::WORKERS_EXECUTOR,
            Arc::new(PoolExecutor::new(
                pool.clone(),
                self.state.clone(),
                secrets.clone(),
                self.options.heartbeat_interval,
            )),
        );
        let executors = Arc::new(executors);
        let mirror = Mirror::new(self.state.clone(), self.objects.clone());
        let mirror_handle = mirror.handle();
        let scheduler = Scheduler::new(
            self.state.clone(),
            executors.clone(),
            pool.clone(),
            secrets.clone(),
            SchedulerOptions {
                heartbeat_timeout: self.options.heartbeat_timeout,
                tick: self.options.tick,
                owner: self.options.scheduler_id.clone(),
                lease: self.options.lease,
                metrics: self.metrics.clone(),
            },
            mirror_handle.clone(),
            events_rx,
        );
        let ctx = ApiContext {
            state: self.state.clone(),
            scheduler: scheduler.handle(),
            mirror: mirror_handle,
            executors,
            heartbeat_interval: self.options.heartbeat_interval,
            owner: self.options.scheduler_id.clone(),
            pool,
            ping_interval: self.options.ping_interval,
            inline_output_limit: self.options.inline_output_limit,
            outputs: outputs.clone(),
            secrets: secrets.clone(),
            events: api::events::EventHub::default(),
            metrics: self.metrics.clone(),
        };
        let events = ctx.events.clone();
        let rest = api::gateway::router(ctx.clone()).merge(api::prometheus::router(
            ctx.clone(),
            self.options.metrics_token.clone(),
        ));
        let app = one_port_app(api::routes(ctx)?, rest)
            .layer(axum::middleware::from_fn(crate::telemetry::trace_request));

        let mirror_task = tokio::spawn(mirror.run(stop_rx.clone()));
        let scheduler_task = tokio::spawn(scheduler.run(stop_rx));
        tracing::info!(addr = %self.local_addr, "ork server listening");
        let listener = self.listener.tap_io(|tcp| {
            // As tonic does: small gRPC frames must not wait for Nagle.
            let _ = tcp.set_nodelay(true);
        });
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                // Open log follows and run watches end, so connections drain.
                events.close();
            })
            .await;
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
