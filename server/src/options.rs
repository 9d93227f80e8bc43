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
    /// When set, `GET /metrics` answers only requests that carry
    /// `Authorization: Bearer <token>` (what Prometheus sends with
    /// `authorization: {credentials: ...}` in its scrape config).
    pub metrics_token: Option<BearerToken>,
    /// Where run and attempt spans are exported (`--otlp-endpoint`); `None`
    /// keeps no spans. RPC and state spans go through `tracing`.
    pub spans: Option<crate::telemetry::SpanSink>,
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
