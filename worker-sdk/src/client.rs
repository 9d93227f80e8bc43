//! A fenced WorkerService client for one task attempt.
//!
//! Every call carries the attempt's (task run id, attempt, token), so the server
//! can reject a zombie worker. Transient failures are retried with exponential
//! backoff for a bounded total time: a report must survive a server restart, but
//! a worker must not hang forever on a server that is gone.

use std::time::Duration;

use ork_proto::v1 as pb;
use ork_proto::v1::worker_service_client::WorkerServiceClient;
use tokio::time::Instant;
use tonic::service::interceptor::InterceptedService;

use crate::Error;
use crate::connect::{AuthChannel, ConnectOptions};
use crate::json;
use crate::metrics::TaskMetrics;

/// Identifies one attempt of one task run; every call is fenced by it.
#[derive(Clone, PartialEq, Eq)]
pub struct AttemptRef {
    /// The task run id.
    pub task_run_id: String,
    /// The attempt number (1 for the first try).
    pub attempt: u32,
    /// The secret token the server issued for this attempt.
    pub token: String,
}

impl std::fmt::Debug for AttemptRef {
    // The token is a credential for this attempt: keep it out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptRef")
            .field("task_run_id", &self.task_run_id)
            .field("attempt", &self.attempt)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl AttemptRef {
    fn to_proto(&self) -> pb::AttemptRef {
        pb::AttemptRef {
            task_run_id: self.task_run_id.clone(),
            attempt: self.attempt,
            token: self.token.clone(),
        }
    }
}

/// How transient failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first delay between two tries.
    pub initial_delay: Duration,
    /// The cap on the delay; the delay doubles up to it.
    pub max_delay: Duration,
    /// The total time after which a call gives up with [`Error::Unreachable`].
    pub total: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            total: Duration::from_secs(10 * 60),
        }
    }
}

/// The delays between tries of one call: doubling from the initial delay up to
/// the cap, until the total budget is spent.
#[derive(Debug)]
pub(crate) struct Backoff {
    policy: RetryPolicy,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            next: policy.initial_delay,
        }
    }

    /// The delay before the next try, or `None` when sleeping it would go past
    /// the total budget (`elapsed` is the time spent on this call so far).
    pub(crate) fn next_delay(&mut self, elapsed: Duration) -> Option<Duration> {
        let delay = self.next.min(self.policy.max_delay);
        if elapsed.saturating_add(delay) > self.policy.total {
            return None;
        }
        self.next = delay.saturating_mul(2).min(self.policy.max_delay);
        Some(delay)
    }
}

/// Whether a failed call may succeed if tried again: the server is restarting,
/// unreachable, or the request timed out on the way.
pub(crate) fn is_transient(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => true,
        // tonic reports a client-side request timeout as CANCELLED.
        tonic::Code::Cancelled => true,
        // UNKNOWN with a source is a transport failure raised on this side (a reset
        // connection, a broken HTTP/2 stream); the server itself never attaches a
        // source, and an UNKNOWN it sends is treated as final.
        tonic::Code::Unknown => status.source().is_some(),
        _ => false,
    }
}

/// Turns a final (non-transient) status into the SDK's error.
pub(crate) fn classify(call: &'static str, status: &tonic::Status) -> Error {
    match status.code() {
        tonic::Code::FailedPrecondition => Error::Stale(status.message().to_owned()),
        code => Error::Rpc {
            call,
            code,
            message: status.message().to_owned(),
        },
    }
}

/// A WorkerService client bound to one attempt.
///
/// Cheap to clone: clones share one HTTP/2 connection.
#[derive(Debug, Clone)]
pub struct Client {
    inner: WorkerServiceClient<AuthChannel>,
    attempt: AttemptRef,
    retry: RetryPolicy,
}

/// Largest message sent or received: a task spec carries the task's file,
/// an output may be large (the server has its own, configurable limits).
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// The time one request may take before it is abandoned and retried. Worker
/// calls are small; a call that takes longer is stuck on a dead connection.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl Client {
    /// Creates a client for `attempt` against `server_url` (e.g.
    /// `http://127.0.0.1:7400`) that authenticates with the attempt's own
    /// token, as a launched worker does; TLS settings come from the
    /// environment ([`ConnectOptions::from_env`]).
    ///
    /// The connection is opened lazily by the first call, so a server that is
    /// down right now is retried like any transient failure instead of failing
    /// here.
    pub async fn connect(server_url: &str, attempt: AttemptRef) -> Result<Self, Error> {
        let options = ConnectOptions::from_env().with_token(attempt.token.clone());
        Self::connect_with(server_url, attempt, &options).await
    }

    /// As [`Client::connect`], with explicit connection settings (a pool
    /// worker's worker token, a CA file, a client certificate).
    pub async fn connect_with(
        server_url: &str,
        attempt: AttemptRef,
        options: &ConnectOptions,
    ) -> Result<Self, Error> {
        let channel = options
            .endpoint(server_url)?
            .connect_timeout(Duration::from_secs(5))
            .timeout(REQUEST_TIMEOUT)
            .connect_lazy();
        Ok(Self {
            inner: WorkerServiceClient::new(InterceptedService::new(channel, options.bearer()?))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            attempt,
            retry: RetryPolicy::default(),
        })
    }

    /// A client for another attempt over the same connection (pool workers
    /// run many attempts over one channel).
    pub fn for_attempt(&self, attempt: AttemptRef) -> Self {
        Self {
            inner: self.inner.clone(),
            attempt,
            retry: self.retry,
        }
    }

    /// The underlying channel, for the session stream of a pool worker.
    pub(crate) fn service(&self) -> WorkerServiceClient<AuthChannel> {
        self.inner.clone()
    }

    /// Replaces the retry policy (the default retries for 10 minutes).
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The attempt this client reports for.
    pub fn attempt(&self) -> &AttemptRef {
        &self.attempt
    }

    /// Fetches what this attempt must run (`GetTaskSpec`).
    pub async fn get_spec(&self) -> Result<pb::TaskSpec, Error> {
        let response = self
            .call("GetTaskSpec", |mut c, attempt| async move {
                c.get_task_spec(pb::GetTaskSpecRequest { attempt }).await
            })
            .await?;
        response
            .spec
            .ok_or_else(|| Error::Protocol("GetTaskSpec returned no spec".to_owned()))
    }

    /// Marks the attempt running (`StartTask`).
    pub async fn start(&self) -> Result<(), Error> {
        self.call("StartTask", |mut c, attempt| async move {
            c.start_task(pb::StartTaskRequest { attempt }).await
        })
        .await
        .map(drop)
    }

    /// Tells the server the attempt is alive. Returns `true` when the attempt was
    /// cancelled and the worker must stop.
    pub async fn heartbeat(&self) -> Result<bool, Error> {
        let response = self
            .call("Heartbeat", |mut c, attempt| async move {
                c.heartbeat(pb::HeartbeatRequest { attempt }).await
            })
            .await?;
        Ok(response.cancelled)
    }

    /// Stores a batch of log lines (`AppendLogs`). An empty batch sends nothing.
    pub async fn append_logs(&self, entries: Vec<pb::LogEntry>) -> Result<(), Error> {
        if entries.is_empty() {
            return Ok(());
        }
        self.call("AppendLogs", |mut c, attempt| {
            let entries = entries.clone();
            async move {
                c.append_logs(pb::AppendLogsRequest { attempt, entries })
                    .await
            }
        })
        .await
        .map(drop)
    }

    /// Records the attempt's output and the metrics it recorded
    /// (`CompleteTask`).
    pub async fn complete(
        &self,
        output: serde_json::Value,
        metrics: TaskMetrics,
    ) -> Result<(), Error> {
        let output = json::to_proto(&output);
        self.call("CompleteTask", |mut c, attempt| {
            let output = Some(output.clone());
            let metrics = metrics.clone();
            async move {
                c.complete_task(pb::CompleteTaskRequest {
                    attempt,
                    output,
                    metrics,
                })
                .await
            }
        })
        .await
        .map(drop)
    }

    /// Records the attempt's error (`FailTask`). The server retries the task
    /// unless `non_retryable` is set or the retries are used up. `metrics` are
    /// what the task recorded before it failed.
    pub async fn fail(
        &self,
        error: String,
        non_retryable: bool,
        metrics: TaskMetrics,
    ) -> Result<(), Error> {
        self.call("FailTask", |mut c, attempt| {
            let error = error.clone();
            let metrics = metrics.clone();
            async move {
                c.fail_task(pb::FailTaskRequest {
                    attempt,
                    error,
                    non_retryable,
                    metrics,
                })
                .await
            }
        })
        .await
        .map(drop)
    }

    /// Runs one call, retrying transient failures with backoff within the budget.
    async fn call<T, F, Fut>(&self, name: &'static str, mut send: F) -> Result<T, Error>
    where
        F: FnMut(WorkerServiceClient<AuthChannel>, Option<pb::AttemptRef>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let started = Instant::now();
        let mut backoff = Backoff::new(self.retry);
        loop {
            let status = match send(self.inner.clone(), Some(self.attempt.to_proto())).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => status,
            };
            if !is_transient(&status) {
                return Err(classify(name, &status));
            }
            let elapsed = started.elapsed();
            let Some(delay) = backoff.next_delay(elapsed) else {
                return Err(Error::Unreachable {
                    call: name,
                    elapsed,
                    last: format!("{:?}: {}", status.code(), status.message()),
                });
            };
            tracing::debug!(
                call = name,
                code = ?status.code(),
                message = status.message(),
                ?delay,
                "transient failure, retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = Backoff::new(RetryPolicy::default());
        let delays: Vec<u64> = (0..8)
            .map(|_| {
                b.next_delay(Duration::ZERO)
                    .map_or(0, |d| d.as_millis() as u64)
            })
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    }

    #[test]
    fn backoff_stops_when_the_budget_is_spent() {
        let policy = RetryPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            total: Duration::from_secs(1),
        };
        let mut b = Backoff::new(policy);
        assert_eq!(
            b.next_delay(Duration::from_millis(850)),
            Some(Duration::from_millis(100))
        );
        // 950 ms spent + 200 ms next delay would pass the 1 s budget.
        assert_eq!(b.next_delay(Duration::from_millis(950)), None);
    }

    #[test]
    fn transient_statuses_are_retried_and_others_are_not() {
        assert!(is_transient(&tonic::Status::unavailable("down")));
        assert!(is_transient(&tonic::Status::deadline_exceeded("slow")));
        assert!(is_transient(&tonic::Status::cancelled("Timeout expired")));
        // An UNKNOWN raised by the transport carries its source error.
        let transport = tonic::Status::from_error(Box::new(std::io::Error::other("reset")));
        assert_eq!(transport.code(), tonic::Code::Unknown);
        assert!(is_transient(&transport));
        // An UNKNOWN sent by the server has no source and is final.
        assert!(!is_transient(&tonic::Status::unknown("server bug")));
        assert!(!is_transient(&tonic::Status::failed_precondition("stale")));
        assert!(!is_transient(&tonic::Status::invalid_argument("bad")));
        assert!(!is_transient(&tonic::Status::not_found("gone")));
    }

    #[test]
    fn failed_precondition_is_stale_and_other_codes_are_rpc_errors() {
        let stale = classify(
            "Heartbeat",
            &tonic::Status::failed_precondition("attempt 2 is current"),
        );
        assert!(matches!(stale, Error::Stale(ref m) if m == "attempt 2 is current"));
        let other = classify(
            "CompleteTask",
            &tonic::Status::invalid_argument("output too large"),
        );
        assert_eq!(
            other.to_string(),
            "server rejected CompleteTask: InvalidArgument: output too large"
        );
    }

    #[test]
    fn debug_output_hides_the_token() {
        let a = AttemptRef {
            task_run_id: "tr1".into(),
            attempt: 2,
            token: "s3cret".into(),
        };
        let shown = format!("{a:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("tr1"), "{shown}");
    }

    #[tokio::test]
    async fn invalid_url_is_refused_at_connect() {
        let a = AttemptRef {
            task_run_id: "tr1".into(),
            attempt: 1,
            token: "t".into(),
        };
        let err = Client::connect("not a url", a).await.err();
        assert!(matches!(err, Some(Error::InvalidUrl { .. })), "{err:?}");
    }

    #[tokio::test]
    async fn unreachable_server_gives_up_after_the_budget() {
        // Bind then drop a listener to get a local port that refuses connections.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind an ephemeral port");
        let a = AttemptRef {
            task_run_id: "tr1".into(),
            attempt: 1,
            token: "t".into(),
        };
        let client = Client::connect(&format!("http://127.0.0.1:{port}"), a)
            .await
            .expect("valid url")
            .with_retry_policy(RetryPolicy {
                initial_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(20),
                total: Duration::from_millis(200),
            });
        let err = client.heartbeat().await.err();
        assert!(
            matches!(
                err,
                Some(Error::Unreachable {
                    call: "Heartbeat",
                    ..
                })
            ),
            "{err:?}"
        );
    }
}
