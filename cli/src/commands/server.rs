//! `ork server`: the control plane against explicit state and object stores,
//! and the serving loop it shares with `ork dev`.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use ork_server::options::BearerToken;
use ork_server::{DEFAULT_LISTEN, Server, ServerOptions};

use crate::telemetry::{LogFormat, Telemetry};

use super::workflow::deploy;

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address for gRPC (and the HTTP gateway), e.g. 0.0.0.0:7400.
    #[arg(long, env = "ORK_LISTEN", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// State store URL, e.g. sqlite:///var/lib/ork/ork.db.
    #[arg(long = "state", env = "ORK_STATE_URL", value_name = "URL")]
    state_url: String,
    /// Object store URL, e.g. file:///var/lib/ork/objects or memory://.
    #[arg(long = "objects", env = "ORK_OBJECTS_URL", value_name = "URL")]
    objects_url: String,
    /// Local folder for the attempts' working directories.
    #[arg(long, env = "ORK_DATA_DIR", default_value = ".ork", value_name = "DIR")]
    data_dir: PathBuf,
    /// This replica's name on the runs it leases (default: a fresh unique
    /// name, so several `ork server`s can share one database).
    #[arg(long, env = "ORK_SCHEDULER_ID", value_name = "NAME")]
    scheduler_id: Option<String>,
    #[command(flatten)]
    tuning: TuningArgs,
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
}

impl TuningArgs {
    /// Starts the process's logs and trace export as these flags say.
    pub fn telemetry(&self) -> anyhow::Result<Telemetry> {
        crate::telemetry::init_server(self.log_format, self.otlp_endpoint.as_deref())
    }

    pub fn apply(self, options: &mut ServerOptions) -> anyhow::Result<()> {
        if let Some(secs) = self.heartbeat_timeout {
            options.heartbeat_timeout = Duration::from_secs(secs);
        }
        if let Some(secs) = self.heartbeat_interval {
            options.heartbeat_interval = Duration::from_secs(secs);
        }
        if let Some(path) = self.worker_binary {
            options.worker_binary = Some(path);
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
            options.secrets_dir = Some(dir);
        }
        if let Some(token) = self.metrics_token {
            options.metrics_token =
                Some(BearerToken::new(token).map_err(|e| anyhow::anyhow!("--metrics-token: {e}"))?);
        }
        Ok(())
    }
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let telemetry = args.tuning.telemetry()?;
    let mut options = ServerOptions::embedded(&args.data_dir, args.listen);
    options.spans = telemetry.spans.clone();
    options.state_url = args.state_url;
    options.objects_url = args.objects_url;
    options.scheduler_id = args
        .scheduler_id
        .unwrap_or_else(ork_server::options::unique_scheduler_id);
    args.tuning.apply(&mut options)?;
    let stores = format!(
        "state {}, objects {}",
        redact_url(&options.state_url),
        redact_url(&options.objects_url)
    );
    serve(
        options,
        &args.data_dir,
        |addr| format!("ork server listening on http://{addr} ({stores})"),
        &[],
    )
    .await
}

/// Binds, announces the real address on stderr (so `--listen 127.0.0.1:0`
/// is usable), deploys `files` against itself, then serves until Ctrl-C or
/// SIGTERM. A file that fails to deploy stops the server: the user asked
/// for it, so carrying on would hide the error.
pub async fn serve(
    options: ServerOptions,
    data_dir: &Path,
    banner: impl FnOnce(SocketAddr) -> String,
    files: &[PathBuf],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let server = Server::bind(options).await?;
    let addr = server.local_addr();
    eprintln!("{}", banner(addr));

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
        let deploying = deploy_all(connect_addr(addr), files);
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

async fn deploy_all(addr: SocketAddr, files: &[PathBuf]) -> anyhow::Result<()> {
    let client = crate::client::connect(&format!("http://{addr}")).await?;
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
fn redact_url(url: &str) -> String {
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
