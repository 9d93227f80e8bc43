//! Pool mode: a long-lived worker that serves named handlers.
//!
//! The worker opens one `Session` stream, attaches with its handlers and slot
//! count, and runs the attempts the server pushes, at most `slots` at once.
//! Everything about an attempt travels over the same stream: the assignment
//! marks it started, the server keeps it alive while the session lives (no
//! heartbeats), and the worker sends its log lines and its outcome as
//! `SessionReport`s, which the server commits together with other workers'.
//! The session is the worker's liveness: if it breaks, the server retries
//! the worker's attempts elsewhere, so the worker stops them and attaches
//! again.
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ork_proto::json;
use ork_proto::v1 as pb;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::connect::ConnectOptions;
use crate::metrics::Recorder;
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
        let tasks = Arc::new(self.tasks);
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(100);
        loop {
            let (out_tx, out_rx) = mpsc::channel::<pb::SessionRequest>(1024);
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
            let session = Session {
                reporter: Reporter {
                    out: out_tx.downgrade(),
                    next_id: Arc::default(),
                    waiting: Arc::default(),
                },
                tasks: tasks.clone(),
                slots: slots.clone(),
                running: Arc::default(),
            };
            let ended = session.serve(&mut inbound, &mut shutdown).await?;
            if ended == SessionEnd::Shutdown {
                // Drain: no new work; wait for every running attempt.
                let _ = out_tx
                    .send(pb::SessionRequest {
                        message: Some(pb::session_request::Message::Drain(pb::WorkerDrain {})),
                    })
                    .await;
                // Assignments sent before the server saw the drain were
                // started by it: run them too, until it confirms none follow.
                let notice = tokio::time::sleep(DRAIN_NOTICE);
                tokio::pin!(notice);
                loop {
                    tokio::select! {
                        _ = &mut notice => break,
                        m = inbound.message() => match m {
                            Ok(Some(m)) => match m.message {
                                Some(pb::session_response::Message::Drained(_)) => break,
                                other => session.handle(other).await,
                            },
                            _ => return Ok(()),
                        },
                    }
                }
                // Keep reading (pings, cancellations, report results) until
                // every attempt reported, or the server would think this
                // worker dead before its last reports are in.
                let all_done = async {
                    let _ = slots.acquire_many(self.slots).await;
                    session.reporter.settled().await;
                };
                tokio::pin!(all_done);
                loop {
                    tokio::select! {
                        _ = &mut all_done => return Ok(()),
                        m = inbound.message() => match m {
                            Ok(Some(m)) => session.handle(m.message).await,
                            _ => return Ok(()),
                        },
                    }
                }
            }
            // The server fails a broken session's attempts as lost (and
            // retries them): stop them, nothing they report would count.
            session.stop_all();
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum SessionEnd {
    Shutdown,
    Broken,
}

/// Sends reports over the session and routes their results back.
#[derive(Clone)]
struct Reporter {
    /// Weak: only the session loop keeps the stream open, so a worker that
    /// dies (or a session that ends) closes it at once, however many
    /// attempts are still running.
    out: mpsc::WeakSender<pb::SessionRequest>,
    next_id: Arc<AtomicU64>,
    /// Reports sent and not answered yet, by id.
    waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<pb::SessionReportResult>>>>,
}

impl Reporter {
    /// Sends a report; the receiver resolves with the server's answer (or
    /// errs when the session ends first).
    async fn send(
        &self,
        attempt: &pb::AttemptRef,
        logs: Vec<pb::LogEntry>,
        outcome: Option<pb::session_report::Outcome>,
    ) -> oneshot::Receiver<pb::SessionReportResult> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.insert(id, tx);
        }
        let report = pb::SessionRequest {
            message: Some(pb::session_request::Message::Report(pb::SessionReport {
                id,
                attempt: Some(attempt.clone()),
                logs,
                outcome,
            })),
        };
        let sent = match self.out.upgrade() {
            Some(out) => out.send(report).await.is_ok(),
            None => false,
        };
        if !sent && let Ok(mut waiting) = self.waiting.lock() {
            waiting.remove(&id);
        }
        rx
    }

    fn answered(&self, result: pb::SessionReportResult) {
        let tx = self
            .waiting
            .lock()
            .ok()
            .and_then(|mut w| w.remove(&result.id));
        if let Some(tx) = tx {
            let _ = tx.send(result);
        }
    }

    /// Resolves once every report sent so far was answered.
    async fn settled(&self) {
        loop {
            let empty = self.waiting.lock().map(|w| w.is_empty()).unwrap_or(true);
            if empty {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One attached session: its stream's reader and the attempts it runs.
struct Session {
    reporter: Reporter,
    tasks: Arc<HashMap<String, TaskDef>>,
    slots: Arc<Semaphore>,
    /// The cancellation switch of each running attempt, by task run id.
    running: Arc<Mutex<HashMap<String, watch::Sender<bool>>>>,
}

impl Session {
    async fn serve(
        &self,
        inbound: &mut tonic::Streaming<pb::SessionResponse>,
        shutdown: &mut Pin<&mut (impl Future<Output = ()> + Send)>,
    ) -> Result<SessionEnd, Error> {
        loop {
            let message = tokio::select! {
                m = inbound.message() => m,
                _ = shutdown.as_mut() => return Ok(SessionEnd::Shutdown),
            };
            let Ok(Some(message)) = message else {
                tracing::warn!("session ended; reconnecting");
                return Ok(SessionEnd::Broken);
            };
            match message.message {
                Some(pb::session_response::Message::Attached(a)) => {
                    if !a.session_reports {
                        return Err(Error::Protocol(
                            "this ork server does not take reports over the session; upgrade the server"
                                .to_owned(),
                        ));
                    }
                    tracing::info!(session = %a.session_id, "attached");
                }
                other => self.handle(other).await,
            }
        }
    }

    /// Handles any message but the attach confirmation.
    async fn handle(&self, message: Option<pb::session_response::Message>) {
        match message {
            Some(pb::session_response::Message::Assignment(a)) => self.assigned(a),
            other => self.answer(pb::SessionResponse { message: other }).await,
        }
    }

    /// Starts an assigned attempt. The server never assigns more than the
    /// free slots, so a permit is free at once; should one not be, the
    /// attempt waits for it in its own task, never blocking the reader.
    fn assigned(&self, assignment: pb::Assignment) {
        let (Some(attempt), Some(spec)) = (assignment.attempt, assignment.spec) else {
            return;
        };
        let (cancel_tx, cancel_rx) = watch::channel(false);
        if let Ok(mut m) = self.running.lock() {
            m.insert(attempt.task_run_id.clone(), cancel_tx.clone());
        }
        let def = self.tasks.get(&spec.handler).cloned();
        let running = self.running.clone();
        let slots = self.slots.clone();
        let reporter = self.reporter.clone();
        let taken = slots.clone().try_acquire_owned().ok();
        tokio::spawn(async move {
            let permit = match taken {
                Some(permit) => permit,
                None => match slots.acquire_owned().await {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let key = attempt.task_run_id.clone();
            run_attempt(reporter, attempt, spec, def, cancel_tx, cancel_rx, permit).await;
            if let Ok(mut m) = running.lock() {
                m.remove(&key);
            }
        });
    }

    /// Answers the messages that need no slot: pings, cancellations and
    /// report results.
    async fn answer(&self, message: pb::SessionResponse) {
        match message.message {
            Some(pb::session_response::Message::Ping(p)) => {
                let pong = pb::SessionRequest {
                    message: Some(pb::session_request::Message::Pong(pb::WorkerPong {
                        nonce: p.nonce,
                    })),
                };
                if let Some(out) = self.reporter.out.upgrade() {
                    let _ = out.send(pong).await;
                }
            }
            Some(pb::session_response::Message::Cancel(c)) => {
                let tx = c.attempt.and_then(|a| {
                    self.running
                        .lock()
                        .ok()
                        .and_then(|m| m.get(&a.task_run_id).cloned())
                });
                if let Some(tx) = tx {
                    let _ = tx.send(true);
                }
            }
            Some(pb::session_response::Message::Result(r)) => self.reporter.answered(r),
            _ => {}
        }
    }

    /// Stops every running attempt, reporting nothing for them.
    fn stop_all(&self) {
        if let Ok(running) = self.running.lock() {
            for tx in running.values() {
                let _ = tx.send(true);
            }
        }
        if let Ok(mut waiting) = self.reporter.waiting.lock() {
            waiting.clear();
        }
    }
}

/// Longest a draining worker waits for the server to confirm that no
/// assignment follows (a server that never confirms is not waited for longer).
const DRAIN_NOTICE: Duration = Duration::from_secs(10);
/// Log lines are sent at least this often while an attempt runs.
const LOG_FLUSH: Duration = Duration::from_millis(200);
/// How long a cancelled handler may take to notice before it is dropped.
const CANCEL_GRACE: Duration = Duration::from_secs(10);

async fn run_attempt(
    reporter: Reporter,
    attempt: pb::AttemptRef,
    spec: pb::TaskSpec,
    def: Option<TaskDef>,
    cancel_tx: watch::Sender<bool>,
    cancel_rx: watch::Receiver<bool>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let logs: Arc<Mutex<Vec<pb::LogEntry>>> = Arc::default();
    let metrics = Recorder::default();
    let result = match def {
        None => Some(Err(TaskError::non_retryable(format!(
            "this worker has no handler `{}`",
            spec.handler
        )))),
        Some(def) => {
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
            let mut flush =
                tokio::time::interval_at(tokio::time::Instant::now() + LOG_FLUSH, LOG_FLUSH);
            let mut cancelled = cancel_rx.clone();
            loop {
                tokio::select! {
                    r = &mut work => break Some(r),
                    _ = flush.tick() => {
                        let batch = take(&logs);
                        if !batch.is_empty() {
                            // The answer is not waited for: the server applies
                            // an attempt's reports in order.
                            drop(reporter.send(&attempt, batch, None).await);
                        }
                    }
                    _ = cancelled.changed() => {
                        if *cancelled.borrow() {
                            // Give a cooperative handler a moment to notice.
                            let _ = tokio::time::timeout(CANCEL_GRACE, &mut work).await;
                            break None;
                        }
                    }
                }
            }
        }
    };
    drop(cancel_tx);
    // Cancelled (by the server, or with the session): report nothing.
    let Some(result) = result else { return };
    let outcome = match result {
        Ok(output) => pb::session_report::Outcome::Success(pb::AttemptSuccess {
            output: Some(json::to_proto(&output)),
            metrics: metrics.snapshot(),
        }),
        Err(e) => pb::session_report::Outcome::Failure(pb::AttemptFailure {
            error: e.message,
            non_retryable: e.non_retryable,
            metrics: metrics.snapshot(),
        }),
    };
    let answer = reporter.send(&attempt, take(&logs), Some(outcome)).await;
    // The slot is free once the outcome is on its way: the server assigns
    // the next attempt only after it committed this one.
    drop(permit);
    match answer.await {
        Ok(r) if r.code == 0 => {}
        Ok(r) => tracing::warn!(
            task_run = %attempt.task_run_id,
            code = ?tonic::Code::from_i32(r.code),
            message = %r.message,
            "the server refused the attempt's report"
        ),
        Err(_) => tracing::warn!(
            task_run = %attempt.task_run_id,
            "the session ended before the attempt's report was answered; the server retries it"
        ),
    }
}

fn take(logs: &Mutex<Vec<pb::LogEntry>>) -> Vec<pb::LogEntry> {
    logs.lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default()
}

fn now_timestamp() -> pbjson_types::Timestamp {
    ork_proto::time::to_proto(Utc::now())
}
