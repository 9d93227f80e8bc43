//! The scheduler: hands ready task runs to executors and ends attempts that
//! ran out of time or lost their worker.
//!
//! Hand-offs are event-driven: a report readies successors in its own
//! transaction and then wakes the dispatch loop, so no polling interval sits
//! between two tasks. The timer loop only serves clocks (timeouts, lost
//! heartbeats, retry delays).

pub mod cron;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Notify, mpsc, watch};

use crate::executor::{Error as ExecutorError, ExecutorEvent, Executors, Launch, WorkerPool};
use crate::metrics::Metrics;
use crate::objects::MirrorHandle;
use crate::secrets::Secrets;
use crate::state::{self, Capacity, Claim, Failure, FailureKind, StateStore};

/// Most task runs claimed in one transaction.
const CLAIM_BATCH: u32 = 256;

#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    pub heartbeat_timeout: Duration,
    pub tick: Duration,
    /// This replica's name, the owner recorded on the runs it leases.
    pub owner: String,
    /// How long a lease lasts; renewed every third of it.
    pub lease: Duration,
    /// Where cron fires are counted.
    pub metrics: Metrics,
}

/// Cheap handle to wake the dispatch loop after a commit that readied work.
#[derive(Clone, Default)]
pub struct SchedulerHandle {
    wake: Arc<Notify>,
}

impl SchedulerHandle {
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

pub struct Scheduler {
    state: Arc<dyn StateStore>,
    executors: Arc<Executors>,
    pool: Arc<WorkerPool>,
    secrets: Arc<Secrets>,
    options: SchedulerOptions,
    handle: SchedulerHandle,
    mirror: MirrorHandle,
    events: mpsc::UnboundedReceiver<ExecutorEvent>,
}

impl Scheduler {
    pub fn new(
        state: Arc<dyn StateStore>,
        executors: Arc<Executors>,
        pool: Arc<WorkerPool>,
        secrets: Arc<Secrets>,
        options: SchedulerOptions,
        mirror: MirrorHandle,
        events: mpsc::UnboundedReceiver<ExecutorEvent>,
    ) -> Self {
        Self {
            state,
            executors,
            pool,
            secrets,
            options,
            handle: SchedulerHandle::default(),
            mirror,
            events,
        }
    }

    pub fn handle(&self) -> SchedulerHandle {
        self.handle.clone()
    }

    /// Runs the dispatch, timer and executor-event loops until `shutdown`.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        match self.state.recover(&self.options.owner, Utc::now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                "{n} attempts were running before this start; waiting for their workers to call back"
            ),
            Err(e) => tracing::error!(error = %e, "recovery failed"),
        }
        let state = self.state.clone();
        let owner = self.options.owner.clone();
        let core = Arc::new(Core {
            cron: cron::Cron::new(self.state.clone(), self.options.owner.clone()),
            pool: self.pool,
            last_renewal: std::sync::Mutex::new(None),
            state: self.state,
            executors: self.executors,
            secrets: self.secrets,
            options: self.options,
            handle: self.handle,
            mirror: self.mirror,
        });
        // Reports received by other replicas for runs this one owns arrive as
        // store notifications (PostgreSQL LISTEN/NOTIFY): each is a wake-up.
        match core.state.wakeups(&core.options.owner).await {
            Ok(Some(mut stream)) => {
                let handle = core.handle.clone();
                let mut stop = shutdown.clone();
                tokio::spawn(async move {
                    use futures::StreamExt as _;
                    loop {
                        tokio::select! {
                            item = stream.next() => match item {
                                Some(()) => handle.wake(),
                                None => return,
                            },
                            _ = stop.changed() => return,
                        }
                    }
                });
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for other replicas' wake-ups; relying on the tick")
            }
        }
        let dispatch = tokio::spawn(core.clone().dispatch_loop(shutdown.clone()));
        let timers = tokio::spawn(core.clone().timer_loop(shutdown.clone()));
        let events = tokio::spawn(core.event_loop(self.events, shutdown));
        let _ = tokio::join!(dispatch, timers, events);
        if let Err(e) = state.release_leases(&owner).await {
            tracing::warn!(error = %e, "releasing leases failed");
        }
    }
}

struct Core {
    cron: cron::Cron,
    pool: Arc<WorkerPool>,
    /// When this replica last renewed its leases.
    last_renewal: std::sync::Mutex<Option<chrono::DateTime<Utc>>>,
    state: Arc<dyn StateStore>,
    executors: Arc<Executors>,
    secrets: Arc<Secrets>,
    options: SchedulerOptions,
    handle: SchedulerHandle,
    mirror: MirrorHandle,
}

impl Core {
    async fn dispatch_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            if *shutdown.borrow() {
                return;
            }
            if let Err(e) = self
                .state
                .promote_pending_runs(&self.options.owner, Utc::now())
                .await
            {
                tracing::warn!(error = %e, "starting waiting runs failed");
            }
            let capacity = Capacity {
                launched: self.executors.launch_capacity(),
                pool: self.pool.capacity(),
            };
            match self
                .state
                .claim_ready(&self.options.owner, Utc::now(), CLAIM_BATCH, &capacity)
                .await
            {
                Ok(claims) if !claims.is_empty() => {
                    backoff = Duration::from_millis(50);
                    let full = claims.len() == CLAIM_BATCH as usize;
                    self.mirror.wake();
                    futures::future::join_all(claims.into_iter().map(|c| self.dispatch(c))).await;
                    if full {
                        continue;
                    }
                }
                Ok(_) => backoff = Duration::from_millis(50),
                Err(e) => {
                    tracing::warn!(error = %e, "claiming ready tasks failed; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
            let sleep = self.until_next_ready().await;
            tokio::select! {
                _ = self.handle.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// How long the dispatch loop may sleep: until the next retry delay ends,
    /// at most one tick.
    async fn until_next_ready(&self) -> Duration {
        match self.state.next_ready_at().await {
            Ok(Some(at)) => (at - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(self.options.tick),
            _ => self.options.tick,
        }
    }

    async fn dispatch(&self, claim: Claim) {
        let Some(executor) = self.executors.get(&claim.executor) else {
            let failure = Failure {
                kind: FailureKind::Dispatch,
                error: format!(
                    "task `{}`, field `executor`: this server has no executor `{}` (it has: {})",
                    claim.task_name,
                    claim.executor,
                    self.executors.names().join(", ")
                ),
                non_retryable: true,
                metrics: Vec::new(),
            };
            self.fail(&claim.fence, failure).await;
            return;
        };
        let launch = Launch {
            fence: claim.fence.clone(),
            run_id: claim.run_id.clone(),
            task_name: claim.task_name.clone(),
            timeout_seconds: claim.timeout_seconds,
            handler: claim.handler.clone(),
        };
        match executor.dispatch(&launch).await {
            Ok(id) => {
                if let Err(e) = self.state.set_executor_id(&claim.fence, &id).await {
                    tracing::warn!(error = %e, "could not record the execution id");
                }
            }
            Err(ExecutorError::NoCapacity { .. }) => {
                // The pool filled up between claim and dispatch: give the
                // claim back; it is claimed again when a slot frees.
                if let Err(e) = self.state.release_claim(&claim.fence).await {
                    tracing::warn!(error = %e, "could not release a claim");
                }
            }
            Err(e) => {
                let failure = Failure {
                    kind: FailureKind::Dispatch,
                    error: format!(
                        "executor `{}` could not start the task: {e}",
                        claim.executor
                    ),
                    non_retryable: matches!(e, ExecutorError::Rejected(_)),
                    metrics: Vec::new(),
                };
                self.fail(&claim.fence, failure).await;
            }
        }
    }

    async fn fail(&self, fence: &state::Fence, failure: Failure) {
        match self.state.fail_attempt(fence, &failure, Utc::now()).await {
            Ok(()) => {
                self.secrets.forget(&fence.task_run_id);
                self.handle.wake();
                self.mirror.wake();
            }
            // Already reported or superseded: the report won, as it should.
            Err(state::Error::Stale { .. } | state::Error::NotFound { .. }) => {}
            Err(e) => {
                tracing::warn!(error = %e, task_run = %fence.task_run_id, "could not fail attempt")
            }
        }
    }

    async fn timer_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut interval = tokio::time::interval(self.options.tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = shutdown.changed() => return,
            }
            self.leases().await;
            match self.cron.fire_due(Utc::now()).await {
                Ok(runs) if !runs.is_empty() => {
                    for run in &runs {
                        self.options.metrics.cron_fired(&run.workflow);
                    }
                    self.handle.wake();
                    self.mirror.wake();
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "firing schedules failed"),
            }
            let expired = match self
                .state
                .expired_attempts(
                    &self.options.owner,
                    Utc::now(),
                    self.options.heartbeat_timeout,
                )
                .await
            {
                Ok(expired) => expired,
                Err(e) => {
                    tracing::warn!(error = %e, "looking for expired attempts failed");
                    continue;
                }
            };
            for attempt in expired {
                if let (Some(id), Some(executor)) =
                    (&attempt.executor_id, self.executors.get(&attempt.executor))
                    && let Err(e) = executor.cancel(id).await
                {
                    tracing::warn!(error = %e, "could not stop expired execution {id}");
                }
                let error = match attempt.kind {
                    FailureKind::Timeout => format!(
                        "timed out after {}s (timeout_seconds); the attempt was killed",
                        attempt.timeout_seconds
                    ),
                    _ => format!(
                        "worker lost: no heartbeat for {}s; the attempt was abandoned",
                        self.options.heartbeat_timeout.as_secs()
                    ),
                };
                self.fail(
                    &attempt.fence,
                    Failure {
                        kind: attempt.kind,
                        error,
                        non_retryable: false,
                        metrics: Vec::new(),
                    },
                )
                .await;
            }
        }
    }

    /// Renews this replica's leases every third of the lease and takes over
    /// runs whose owner stopped renewing.
    async fn leases(&self) {
        let now = Utc::now();
        let due = {
            let mut last = self.last_renewal.lock().unwrap_or_else(|e| e.into_inner());
            let due = last.is_none_or(|t| {
                now - t >= chrono::Duration::from_std(self.options.lease / 3).unwrap_or_default()
            });
            if due {
                *last = Some(now);
            }
            due
        };
        if due && let Err(e) = self.state.renew_leases(&self.options.owner, now).await {
            tracing::warn!(error = %e, "renewing leases failed");
        }
        match self.state.acquire_runs(&self.options.owner, now, 100).await {
            Ok(ids) if !ids.is_empty() => {
                tracing::info!(runs = ids.len(), "took over runs whose lease expired");
                self.handle.wake();
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "taking over runs failed"),
        }
    }

    async fn event_loop(
        self: Arc<Self>,
        mut events: mpsc::UnboundedReceiver<ExecutorEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let event = tokio::select! {
                e = events.recv() => e,
                _ = shutdown.changed() => return,
            };
            let Some(ExecutorEvent::Exited { fence, description }) = event else {
                return;
            };
            // A worker that died without reporting is lost infrastructure, not a
            // task failure: it is retried without spending the task's retries.
            // The worker's stderr tail may echo task output: mask it too.
            let values = self.secrets.values_for(&fence.task_run_id).await;
            let error = crate::secrets::mask(&description, &values);
            let failure = Failure {
                kind: FailureKind::Lost,
                error,
                non_retryable: false,
                metrics: Vec::new(),
            };
            self.fail(&fence, failure).await;
        }
    }
}
