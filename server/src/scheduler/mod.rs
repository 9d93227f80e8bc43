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

use crate::executor::{
    ContainerSpec, Error as ExecutorError, ExecutorEvent, Executors, Launch, WorkerPool,
};
use crate::metrics::Metrics;
use crate::objects::MirrorHandle;
use crate::secrets::Secrets;
use crate::state::{self, Capacity, Claim, Failure, FailureKind, StateStore};

/// Most task runs claimed in one transaction.
const CLAIM_BATCH: u32 = 256;
/// Most unserved pool tasks looked at per tick.
const UNSERVED_BATCH: u32 = 1000;
/// How often the executors' engines are compared with the state: executions
/// left by an earlier server are adopted, those of finished attempts removed.
const RECONCILE_EVERY: Duration = Duration::from_secs(10);

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
    /// Fail pool tasks that no attached worker serves after this long.
    pub schedule_to_start_timeout: Option<Duration>,
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
        // Before any new dispatch: containers a previous process left
        // running are watched again, and leftovers of finished attempts go.
        core.reconcile().await;
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
        let (workflow, container) = match self.container_spec(&claim).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, task_run = %claim.fence.task_run_id, "cannot read the task's definition; giving the claim back");
                if let Err(e) = self.state.release_claim(&claim.fence).await {
                    tracing::warn!(error = %e, "could not release a claim");
                }
                return;
            }
        };
        let launch = Launch {
            fence: claim.fence.clone(),
            run_id: claim.run_id.clone(),
            task_name: claim.task_name.clone(),
            timeout_seconds: claim.timeout_seconds,
            handler: claim.handler.clone(),
            workflow,
            container,
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

    /// For container tasks: the workflow's name and the task's image and
    /// limits, from the run's workflow version (cached by the store).
    async fn container_spec(
        &self,
        claim: &Claim,
    ) -> Result<(String, Option<ContainerSpec>), state::Error> {
        if !ork_domain::CONTAINER_EXECUTORS.contains(&claim.executor.as_str()) {
            return Ok((String::new(), None));
        }
        let not_found = |what: String| state::Error::NotFound { what };
        let run = self
            .state
            .get_run(&claim.run_id)
            .await?
            .ok_or_else(|| not_found(format!("run {}", claim.run_id)))?;
        let version = self
            .state
            .get_version(&run.workflow_version)
            .await?
            .ok_or_else(|| not_found(format!("workflow version {}", run.workflow_version)))?;
        let task = version
            .task(&claim.task_name)
            .ok_or_else(|| not_found(format!("task {}", claim.task_name)))?;
        let container = task.image.as_ref().map(|image| ContainerSpec {
            image: image.clone(),
            pull_policy: task.image_pull_policy,
            cpu: task.resources.cpu.clone(),
            memory: task.resources.memory.clone(),
        });
        Ok((run.workflow, container))
    }

    /// Compares what the engines hold with the state: an execution of an
    /// active attempt of a run this replica owns is adopted (watched, so an
    /// end without a report fails it); one whose attempt is over or
    /// superseded is an orphan and is removed. Runs of other replicas are
    /// left to them, and task runs this store does not know to whoever
    /// started them (another installation on the same engine).
    async fn reconcile(&self) {
        for (name, executor) in self.executors.iter() {
            let executions = match executor.list().await {
                Ok(list) => list,
                Err(e) => {
                    tracing::debug!(executor = name, error = %e, "cannot list executions");
                    continue;
                }
            };
            for execution in executions {
                let fence = &execution.fence;
                let task_run = match self.state.get_task_run(&fence.task_run_id).await {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::warn!(error = %e, "reconcile: cannot read a task run");
                        continue;
                    }
                };
                // A task run this store does not know belongs to another
                // installation sharing the engine: not ours to judge.
                let Some(task_run) = task_run else {
                    continue;
                };
                let current = (task_run.attempt == fence.attempt && task_run.status.is_active())
                    .then_some(task_run);
                let Some(task_run) = current else {
                    tracing::info!(executor = name, execution = %execution.id, "removing an execution whose attempt is over");
                    if let Err(e) = executor.cancel(&execution.id).await {
                        tracing::warn!(error = %e, "cannot remove execution {}", execution.id);
                    }
                    continue;
                };
                let owner = match self.state.get_run(&task_run.run_id).await {
                    Ok(run) => run.and_then(|r| r.owner),
                    Err(e) => {
                        tracing::warn!(error = %e, "reconcile: cannot read a run");
                        continue;
                    }
                };
                if owner.as_deref() != Some(self.options.owner.as_str()) {
                    continue;
                }
                if let Err(e) = executor.adopt(&execution).await {
                    tracing::warn!(error = %e, "cannot adopt execution {}", execution.id);
                }
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
        let mut last_reconcile = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = shutdown.changed() => return,
            }
            self.leases().await;
            if last_reconcile.elapsed() >= RECONCILE_EVERY {
                last_reconcile = tokio::time::Instant::now();
                self.reconcile().await;
            }
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
            if let Some(limit) = self.options.schedule_to_start_timeout {
                self.fail_unserved(limit).await;
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

    /// Fails the pool tasks that have waited longer than `limit` for a
    /// handler no attached worker serves. Tasks whose workers are merely
    /// busy keep waiting: they will run.
    async fn fail_unserved(&self, limit: Duration) {
        let now = Utc::now();
        let cutoff = now - chrono::Duration::from_std(limit).unwrap_or_default();
        let waiting = match self
            .state
            .waiting_pool_tasks(&self.options.owner, cutoff, now, UNSERVED_BATCH)
            .await
        {
            Ok(waiting) => waiting,
            Err(e) => {
                tracing::warn!(error = %e, "looking for unserved pool tasks failed");
                return;
            }
        };
        if waiting.is_empty() {
            return;
        }
        let served = self.pool.handler_slots();
        let attached = if served.is_empty() {
            "no pool worker is attached".to_owned()
        } else {
            let names: Vec<&str> = served.keys().map(String::as_str).collect();
            format!("attached: {}", names.join(", "))
        };
        let mut failed = false;
        for (id, handler) in waiting {
            if served.contains_key(&handler) {
                continue;
            }
            let error = format!(
                "no attached worker serves handler `{handler}` ({attached}); gave up after {}s \
                 (--schedule-to-start-timeout): start a pool worker that serves it",
                limit.as_secs()
            );
            match self.state.fail_pending(&id, &error, now).await {
                Ok(changed) => failed |= changed,
                Err(e) => {
                    tracing::warn!(error = %e, task_run = %id, "could not fail an unserved task")
                }
            }
        }
        if failed {
            self.handle.wake();
            self.mirror.wake();
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
            let Some(ExecutorEvent::Exited {
                fence,
                description,
                kind,
                non_retryable,
            }) = event
            else {
                return;
            };
            // A worker that died without reporting is lost infrastructure, not a
            // task failure (`Lost`: retried without spending the task's
            // retries), unless the executor knows better (an out-of-memory
            // kill is the task's own doing). The worker's log tail may echo
            // task output: mask it too.
            let values = self.secrets.values_for(&fence.task_run_id).await;
            let error = crate::secrets::mask(&description, &values);
            let failure = Failure {
                kind,
                error,
                non_retryable,
                metrics: Vec::new(),
            };
            self.fail(&fence, failure).await;
        }
    }
}
