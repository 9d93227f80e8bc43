//! Pool mode: a long-lived worker that serves named handlers.
//!
//! The worker opens one `Session` stream, attaches with its handlers and slot
//! count, and runs the attempts the server pushes, at most `slots` at once.
//! Each attempt reports through the same fenced calls as a launched worker
//! (start, heartbeat, logs, complete or fail). The session is the worker's
//! liveness: if it breaks, the server retries the worker's attempts elsewhere.
//!
//! ```no_run
//! use ork_worker::pool::{Context, TaskError, Worker, task};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! struct Input { values: Vec<i64> }
//! #[derive(Serialize)]
//! struct Output { sum: i64 }
//!
//! # async fn run() -> Result<(), ork_worker::Error> {
//! Worker::new("http://127.0.0.1:7400")
//!     .slots(8)
//!     .task(task("sum", |ctx: Context, input: Input| async move {
//!         ctx.log(format!("summing {} values", input.values.len()));
//!         Ok::<_, TaskError>(Output { sum: input.values.iter().sum() })
//!     }))
//!     .run(async { let _ = tokio::signal::ctrl_c().await; })
//!     .await
//! # }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ork_proto::json;
use ork_proto::v1 as pb;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::connect::ConnectOptions;
use crate::metrics::{Recorder, TaskMetrics};
use crate::{AttemptRef, Client, Error};

/// Why a task failed, and whether retrying can help.
#[derive(Debug, Clone)]
pub struct TaskError {
    pub message: String,
    pub non_retryable: bool,
}

impl TaskError {
    /// A failure that the task's `retries` may retry.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            non_retryable: false,
        }
    }

    /// A failure that retrying cannot fix (bad input, a permanent refusal).
    pub fn non_retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            non_retryable: true,
        }
    }
}

impl<E: std::fmt::Display> From<E> for TaskError {
    fn from(e: E) -> Self {
        Self::retryable(e.to_string())
    }
}

/// What a handler knows about the attempt it runs.
#[derive(Clone)]
pub struct Context {
    pub run_id: String,
    pub workflow: String,
    pub task_name: String,
    pub task_run_id: String,
    pub attempt: u32,
    pub parallel_index: Option<u32>,
    pub parallel_count: Option<u32>,
    pub deadline: Option<DateTime<Utc>>,
    /// Figures to record for this attempt: `ctx.metrics.record("rows", 1200.0)`.
    pub metrics: Recorder,
    /// The W3C trace context of this attempt's span (empty when the server
    /// sent none); the handler already runs inside a span parented to it.
    pub traceparent: String,
    logs: Arc<Mutex<Vec<pb::LogEntry>>>,
    cancelled: watch::Receiver<bool>,
}

impl Context {
    /// Appends a line to the task's log (shipped in batches).
    pub fn log(&self, line: impl Into<String>) {
        let entry = pb::LogEntry {
            stream: "stdout".to_owned(),
            line: line.into(),
            time: Some(now_timestamp()),
        };
        if let Ok(mut logs) = self.logs.lock() {
            logs.push(entry);
        }
    }

    /// True once the run was cancelled or the attempt timed out.
    pub fn is_cancelled(&self) -> bool {
        *self.cancelled.borrow()
    }

    /// Resolves when the attempt is cancelled, for `tokio::select!`.
    pub async fn cancelled(&self) {
        let mut rx = self.cancelled.clone();
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<serde_json::Value, TaskError>> + Send>>;
type HandlerFn = Arc<dyn Fn(Context, serde_json::Value) -> BoxFuture + Send + Sync>;

/// A named handler; build one with [`task`].
#[derive(Clone)]
pub struct TaskDef {
    name: String,
    run: HandlerFn,
}

/// Declares a handler: typed input and output through serde.
pub fn task<I, O, F, Fut>(name: &str, f: F) -> TaskDef
where
    I: DeserializeOwned + Send + 'static,
    O: Serialize + Send + 'static,
    F: Fn(Context, I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, TaskError>> + Send + 'static,
{
    let f = Arc::new(f);
    let run: HandlerFn = Arc::new(move |ctx, input| {
        let f = f.clone();
        Box::pin(async move {
            let input: I = serde_json::from_value(input).map_err(|e| {
                TaskError::non_retryable(format!("the input does not fit this handler: {e}"))
            })?;
            let output = f(ctx, input).await?;
            serde_json::to_value(output)
                .map_err(|e| TaskError::non_retryable(format!("the output is not JSON: {e}")))
        })
    });
    TaskDef {
        name: name.to_owned(),
        run,
    }
}

/// A pool worker.
pub struct Worker {
    server: String,
    connect: ConnectOptions,
    name: String,
    slots: u32,
    tasks: HashMap<String, TaskDef>,
}

impl Worker {
    /// A worker of `server`; its token and TLS settings come from
    /// `ORK_TOKEN`, `ORK_CA_CERT`, `ORK_CLIENT_CERT`, `ORK_CLIENT_KEY` and
    /// `ORK_TLS_SERVER_NAME` unless set below.
    pub fn new(server: impl Into<String>) -> Self {
        Self {
            server: server.into(),
            connect: ConnectOptions::from_env(),
            name: format!("rust-{}", std::process::id()),
            slots: 4,
            tasks: HashMap::new(),
        }
    }

    /// The worker token to authenticate with (`ork token create --role
    /// worker`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.connect.token = Some(token.into());
        self
    }

    /// A PEM file of the CA that signed the server's certificate.
    pub fn ca_cert(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.connect.ca_cert = Some(path.into());
        self
    }

    /// A client certificate and key, for servers that require mutual TLS.
    pub fn client_identity(
        mut self,
        cert: impl Into<std::path::PathBuf>,
        key: impl Into<std::path::PathBuf>,
    ) -> Self {
        self.connect.client_cert = Some(cert.into());
        self.connect.client_key = Some(key.into());
        self
    }

    /// Replaces every connection setting at once.
    pub fn connect_options(mut self, options: ConnectOptions) -> Self {
        self.connect = options;
        self
    }

    /// How many attempts run at once (at least 1).
    pub fn slots(mut self, slots: u32) -> Self {
        self.slots = slots.max(1);
        self
    }

    /// A name shown in the server's logs.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Serves a handler.
    pub fn task(mut self, def: TaskDef) -> Self {
        self.tasks.insert(def.name.clone(), def);
        self
    }

    /// Serves until `shutdown` resolves, then drains: asks for no more work,
    /// finishes the running attempts and closes the session. Reconnects with
    /// backoff when the session breaks.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), Error> {
        if self.tasks.is_empty() {
            return Err(Error::Config(
                "a pool worker needs at least one task".to_owned(),
            ));
        }
        let base = Client::connect_with(
            &self.server,
            AttemptRef {
                task_run_id: String::new(),
                attempt: 0,
                token: String::new(),
            },
            &self.connect,
        )
        .await?;
        let slots = Arc::new(Semaphore::new(self.slots as usize));
        let running: Arc<Mutex<HashMap<String, watch::Sender<bool>>>> = Arc::default();
        let tasks = Arc::new(self.tasks);
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(100);
        loop {
            let (out_tx, out_rx) = mpsc::channel::<pb::SessionRequest>(64);
            let attach = pb::SessionRequest {
                message: Some(pb::session_request::Message::Attach(pb::WorkerAttach {
                    name: self.name.clone(),
                    handlers: tasks.keys().cloned().collect(),
                    slots: self.slots,
                    sdk: format!("rust/{}", env!("CARGO_PKG_VERSION")),
                })),
            };
            let _ = out_tx.send(attach).await;
            let mut service = base.service();
            let mut inbound = match service.session(ReceiverStream::new(out_rx)).await {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    tracing::warn!(%status, "cannot open a session; retrying in {backoff:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = &mut shutdown => return Ok(()),
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            let ended = serve_session(
                &mut inbound,
                &out_tx,
                &base,
                &tasks,
                &slots,
                &running,
                &mut shutdown,
            )
            .await;
            if ended == SessionEnd::Shutdown {
                // Drain: no new work; wait for every running attempt.
                let _ = out_tx
                    .send(pb::SessionRequest {
                        message: Some(pb::session_request::Message::Drain(pb::WorkerDrain {})),
                    })
                    .await;
                // Keep answering pings (and cancellations) until every slot
                // is free again, or the server would think this worker dead.
                let all_done = slots.acquire_many(self.slots);
                tokio::pin!(all_done);
                loop {
                    tokio::select! {
                        _ = &mut all_done => return Ok(()),
                        m = inbound.message() => match m {
                            Ok(Some(m)) => answer(m, &out_tx, &running).await,
                            _ => return Ok(()),
                        },
                    }
                }
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum SessionEnd {
    Shutdown,
    Broken,
}

#[allow(clippy::too_many_arguments)]
/// Answers the messages that need no slot: pings and cancellations.
async fn answer(
    message: pb::SessionResponse,
    out_tx: &mpsc::Sender<pb::SessionRequest>,
    running: &Mutex<HashMap<String, watch::Sender<bool>>>,
) {
    match message.message {
        Some(pb::session_response::Message::Ping(p)) => {
            let pong = pb::SessionRequest {
                message: Some(pb::session_request::Message::Pong(pb::WorkerPong {
                    nonce: p.nonce,
                })),
            };
            let _ = out_tx.send(pong).await;
        }
        Some(pb::session_response::Message::Cancel(c)) => {
            let tx = c.attempt.and_then(|a| {
                running
                    .lock()
                    .ok()
                    .and_then(|m| m.get(&a.task_run_id).cloned())
            });
            if let Some(tx) = tx {
                let _ = tx.send(true);
            }
        }
        _ => {}
    }
}

async fn serve_session(
    inbound: &mut tonic::Streaming<pb::SessionResponse>,
    out_tx: &mpsc::Sender<pb::SessionRequest>,
    base: &Client,
    tasks: &Arc<HashMap<String, TaskDef>>,
    slots: &Arc<Semaphore>,
    running: &Arc<Mutex<HashMap<String, watch::Sender<bool>>>>,
    shutdown: &mut Pin<&mut (impl Future<Output = ()> + Send)>,
) -> SessionEnd {
    let mut heartbeat = Duration::from_secs(5);
    loop {
        let message = tokio::select! {
            m = inbound.message() => m,
            _ = shutdown.as_mut() => return SessionEnd::Shutdown,
        };
        let Ok(Some(message)) = message else {
            tracing::warn!("session ended; reconnecting");
            return SessionEnd::Broken;
        };
        match message.message {
            Some(pb::session_response::Message::Attached(a)) => {
                heartbeat = Duration::from_secs(u64::from(a.heartbeat_interval_seconds.max(1)));
                tracing::info!(session = %a.session_id, "attached");
            }
            Some(pb::session_response::Message::Assignment(a)) => {
                let (Some(attempt), Some(spec)) = (a.attempt, a.spec) else {
                    continue;
                };
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    continue;
                };
                let attempt = AttemptRef {
                    task_run_id: attempt.task_run_id,
                    attempt: attempt.attempt,
                    token: attempt.token,
                };
                let client = base.for_attempt(attempt.clone());
                let (cancel_tx, cancel_rx) = watch::channel(false);
                if let Ok(mut m) = running.lock() {
                    m.insert(attempt.task_run_id.clone(), cancel_tx.clone());
                }
                let def = tasks.get(&spec.handler).cloned();
                let running = running.clone();
                tokio::spawn(async move {
                    run_attempt(client, spec, def, cancel_tx, cancel_rx, heartbeat).await;
                    if let Ok(mut m) = running.lock() {
                        m.remove(&attempt.task_run_id);
                    }
                    drop(permit);
                });
            }
            other => answer(pb::SessionResponse { message: other }, out_tx, running).await,
        }
    }
}

async fn run_attempt(
    client: Client,
    spec: pb::TaskSpec,
    def: Option<TaskDef>,
    cancel_tx: watch::Sender<bool>,
    cancel_rx: watch::Receiver<bool>,
    heartbeat: Duration,
) {
    let Some(def) = def else {
        let _ = client
            .fail(
                format!("this worker has no handler `{}`", spec.handler),
                false,
                TaskMetrics::new(),
            )
            .await;
        return;
    };
    if let Err(e) = client.start().await {
        tracing::warn!(error = %e, "could not start the attempt");
        return;
    }
    let logs: Arc<Mutex<Vec<pb::LogEntry>>> = Arc::default();
    let metrics = Recorder::default();
    let ctx = Context {
        run_id: spec.run_id.clone(),
        workflow: spec.workflow.clone(),
        task_name: spec.task_name.clone(),
        task_run_id: spec.task_run_id.clone(),
        attempt: spec.attempt,
        parallel_index: spec.parallel_index,
        parallel_count: spec.parallel_count,
        deadline: spec.deadline.as_ref().and_then(ork_proto::time::from_proto),
        metrics: metrics.clone(),
        traceparent: spec.traceparent.clone(),
        logs: logs.clone(),
        cancelled: cancel_rx.clone(),
    };
    let input = spec
        .input
        .as_ref()
        .map_or(serde_json::Value::Null, json::from_proto);
    // The handler's own spans are children of the attempt's span.
    let span = tracing::info_span!(
        "task",
        otel.name = %format!("task {}", spec.handler),
        ork.task = %spec.task_name,
        ork.attempt = spec.attempt,
    );
    if let Some(parent) = crate::trace::parent_context(&spec.traceparent) {
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let _ = span.set_parent(parent);
    }
    let work = tracing::Instrument::instrument((def.run)(ctx, input), span);
    tokio::pin!(work);
    // StartTask already counted as a beat: the first heartbeat is due one
    // interval later, so a short task costs no heartbeat call at all.
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    let mut flush = tokio::time::interval(Duration::from_millis(200));
    let mut cancelled = cancel_rx.clone();
    let result = loop {
        tokio::select! {
            r = &mut work => break Some(r),
            _ = beat.tick() => match client.heartbeat().await {
                Ok(true) => { let _ = cancel_tx.send(true); }
                Ok(false) => {}
                Err(Error::Stale(_)) => { let _ = cancel_tx.send(true); }
                Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
            },
            _ = flush.tick() => ship_logs(&client, &logs).await,
            _ = cancelled.changed() => {
                if *cancelled.borrow() {
                    // Give a cooperative handler a moment to notice.
                    let _ = tokio::time::timeout(Duration::from_secs(10), &mut work).await;
                    break None;
                }
            }
        }
    };
    ship_logs(&client, &logs).await;
    match result {
        None => {} // Cancelled: the server already knows; report nothing.
        Some(Ok(output)) => {
            if let Err(e) = client.complete(output, metrics.snapshot()).await {
                tracing::warn!(error = %e, "could not report the output");
            }
        }
        Some(Err(e)) => {
            if let Err(e) = client
                .fail(e.message, e.non_retryable, metrics.snapshot())
                .await
            {
                tracing::warn!(error = %e, "could not report the failure");
            }
        }
    }
}

async fn ship_logs(client: &Client, logs: &Mutex<Vec<pb::LogEntry>>) {
    let batch: Vec<pb::LogEntry> = match logs.lock() {
        Ok(mut logs) => std::mem::take(&mut *logs),
        Err(_) => return,
    };
    if !batch.is_empty() {
        let _ = client.append_logs(batch).await;
    }
}

fn now_timestamp() -> pbjson_types::Timestamp {
    ork_proto::time::to_proto(Utc::now())
}
