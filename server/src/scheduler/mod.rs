//! The scheduler: hands ready task runs to executors and ends attempts that
//! ran out of time or lost their worker.
//!
//! Hand-offs are event-driven: a report readies successors in its own
//! transaction, and the store's notifier wakes the dispatch loop once it
//! commits, so no polling interval sits between two tasks. The timer loop
//! only serves clocks (timeouts, lost heartbeats, retry delays, leases).

pub mod cron;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, watch};

use crate::executor::{
    ContainerSpec, Error as ExecutorError, ExecutorEvent, Executors, Launch, WorkerPool,
};
use crate::notify::{Changes, Notifier};
use crate::reports::Reports;
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
    /// Fail pool tasks that no attached worker serves after this long.
    pub schedule_to_start_timeout: Option<Duration>,
    /// Sent to workers in their specs.
    pub heartbeat_interval: Duration,
}

pub struct Scheduler {
    state: Arc<dyn StateStore>,
    executors: Arc<Executors>,
    pool: Arc<WorkerPool>,
    secrets: Arc<Secrets>,
    reports: Arc<Reports>,
    options: SchedulerOptions,
    notifier: Notifier,
    events: mpsc::UnboundedReceiver<ExecutorEvent>,
}

impl Scheduler {
    pub fn new(
        state: Arc<dyn StateStore>,
        executors: Arc<Executors>,
        pool: Arc<WorkerPool>,
        secrets: Arc<Secrets>,
        reports: Arc<Reports>,
        options: SchedulerOptions,
        events: mpsc::UnboundedReceiver<ExecutorEvent>,
    ) -> Self {
        Self {
            notifier: state.notifier(),
            state,
            executors,
            pool,
            secrets,
            reports,
            options,
            events,
        }
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
            last_pool_beat: std::sync::Mutex::new(None),
            state: self.state,
            executors: self.executors,
            secrets: self.secrets,
            reports: self.reports,
            options: self.options,
            notifier: self.notifier,
        });
        // Reports received by other replicas for runs this one owns arrive as
        // store notifications (PostgreSQL LISTEN/NOTIFY): each is a wake-up.
        match core.state.wakeups(&core.options.owner).await {
            Ok(Some(mut stream)) => {
                let notifier = core.notifier.clone();
                let mut stop = shutdown.clone();
                tokio::spawn(async move {
                    use futures::StreamExt as _;
                    loop {
                        tokio::select! {
                            item = stream.next() => match item {
                                Some(()) => notifier.fire(Changes::WORK),
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
    /// When the pool's attempts were last kept alive.
    last_pool_beat: std::sync::Mutex<Option<chrono::DateTime<Utc>>>,
    state: Arc<dyn StateStore>,
    executors: Arc<Executors>,
    secrets: Arc<Secrets>,
    reports: Arc<Reports>,
    options: SchedulerOptions,
    notifier: Notifier,
}

impl Core {
    async fn dispatch_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            if *shutdown.borrow() {
                return;
            }
            let (pool, mark) = self.pool.capacity_for_claim();
            let capacity = Capacity {
                launched: self.executors.launch_capacity(),
                pool,
            };
            let now = Utc::now();
            // Waiting runs are promoted while ready tasks are claimed, not
            // before: the read mostly finds none, and a run it does start
            // commits, which wakes this loop again for its tasks.
            let (promoted, claimed) = tokio::join!(
                self.state.promote_pending_runs(&self.options.owner, now),
                self.state
                    .claim_ready(&self.options.owner, now, CLAIM_BATCH, &capacity),
            );
            if let Err(e) = promoted {
                tracing::warn!(error = %e, "starting waiting runs failed");
            }
            match claimed {
                Ok(claims) if !claims.is_empty() => {
                    backoff = Duration::from_millis(50);
                    let full = claims.len() == CLAIM_BATCH as usize;
                    futures::future::join_all(claims.into_iter().map(|c| self.dispatch(c))).await;
                    self.pool.claimed(mark);
                    if full {
                        continue;
                    }
                }
                Ok(_) => {
                    backoff = Duration::from_millis(50);
                    self.pool.claimed(mark);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claiming ready tasks failed; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
            if !self.wait(&mut shutdown).await {
                return;
            }
        }
    }

    /// Sleeps until the next change, the end of the next retry delay, or
    /// one tick; false when the server stops. The retry delays are read
    /// while already waiting, so a change that comes meanwhile (the next
    /// report of a chain) is acted on at once.
    async fn wait(&self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let work = self.notifier.work();
        tokio::pin!(work);
        let next = self.until_next_ready();
        tokio::pin!(next);
        let timer = tokio::time::sleep(self.options.tick);
        tokio::pin!(timer);
        let mut known = false;
        loop {
            tokio::select! {
                _ = &mut work => return true,
                after = &mut next, if !known => {
                    known = true;
                    timer.as_mut().reset(tokio::time::Instant::now() + after);
                }
                _ = &mut timer => return true,
                _ = shutdown.changed() => return false,
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
            let error = match self.executors.why_unavailable(&claim.executor) {
                Some(fix) => format!(
                    "task `{}`, field `executor`: this server cannot run `{}` tasks: {fix}",
                    claim.task_name, claim.executor
                ),
                None => format!(
                    "task `{}`, field `executor`: this server has no executor `{}` (it has: {})",
                    claim.task_name,
                    claim.executor,
                    self.executors.names().join(", ")
                ),
            };
            let failure = Failure {
                kind: FailureKind::Dispatch,
                error,
                non_retryable: true,
            };
            self.fail(&claim.fence, failure).await;
            return;
        };
        let workflow = claim.spec.workflow.clone();
        let container = claim.spec.image.clone().map(|image| ContainerSpec {
            image,
            pull_policy: claim.spec.image_pull_policy,
            cpu: claim.spec.cpu.clone(),
            memory: claim.spec.memory.clone(),
        });
        let spec = match crate::executor::spec::build(
            claim.spec,
            &self.secrets,
            self.options.heartbeat_interval,
        ) {
            Ok(spec) => spec,
            Err(message) => {
                let failure = Failure {
                    kind: FailureKind::Dispatch,
                    error: message,
                    non_retryable: true,
                };
                self.fail(&claim.fence, failure).await;
                return;
            }
        };
        let launch = Launch {
            fence: claim.fence.clone(),
            spec,
            workflow,
            container,
        };
        match executor.dispatch(&launch).await {
            Ok(()) => {}
            Err(ExecutorError::NoCapacity { .. }) => {
                // The pool filled up between claim and dispatch: give the
                // claim back (nobody ever saw its token); it is claimed again
                // when a slot frees.
                self.secrets.forget(&claim.fence.task_run_id);
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
                };
                self.fail(&claim.fence, failure).await;
            }
        }
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
                    if let Err(e) = executor.cancel(&execution.fence).await {
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
        match self.reports.end(fence, failure).await {
            Ok(()) => {}
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
            self.keep_pool_attempts_alive().await;
            if let Err(e) = self.cron.fire_due(Utc::now()).await {
                tracing::warn!(error = %e, "firing schedules failed");
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
                if let Some(executor) = self.executors.get(&attempt.executor)
                    && let Err(e) = executor.cancel(&attempt.fence).await
                {
                    tracing::warn!(error = %e, task_run = %attempt.fence.task_run_id, "could not stop an expired attempt");
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
        for (id, handler) in waiting {
            if served.contains_key(&handler) {
                continue;
            }
            let error = format!(
                "no attached worker serves handler `{handler}` ({attached}); gave up after {}s \
                 (--schedule-to-start-timeout): start a pool worker that serves it",
                limit.as_secs()
            );
            // A failure commits like any other transition: the notifier
            // wakes the loops.
            if let Err(e) = self.state.fail_pending(&id, &error, now).await {
                tracing::warn!(error = %e, task_run = %id, "could not fail an unserved task");
            }
        }
    }

    /// Pool workers send no heartbeats: their session is their liveness. So
    /// every heartbeat interval the attempts of this replica's sessions are
    /// beaten on their behalf, and those cancelled or given up elsewhere (by
    /// the replica that owns their run) are stopped on their worker.
    async fn keep_pool_attempts_alive(&self) {
        let now = Utc::now();
        {
            let mut last = self
                .last_pool_beat
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let interval =
                chrono::Duration::from_std(self.options.heartbeat_interval).unwrap_or_default();
            if last.is_some_and(|t| now - t < interval) {
                return;
            }
            *last = Some(now);
        }
        let running = self.pool.running();
        if running.is_empty() {
            return;
        }
        let answers = match self.state.heartbeats(&running, now).await {
            Ok(answers) => answers,
            Err(e) => {
                tracing::warn!(error = %e, "could not keep pool attempts alive");
                return;
            }
        };
        let Some(pool) = self.executors.get(ork_domain::WORKERS_EXECUTOR) else {
            return;
        };
        for (fence, answer) in running.iter().zip(answers) {
            let stop = match answer {
                Ok(cancelled) => cancelled,
                Err(state::Error::Stale { .. } | state::Error::NotFound { .. }) => true,
                Err(_) => false,
            };
            if stop && let Err(e) = pool.cancel(fence).await {
                tracing::warn!(error = %e, task_run = %fence.task_run_id, "could not stop a pool attempt");
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
            // kill is the task's own doing). Its log tail may echo task
            // output: the report masks it.
            let failure = Failure {
                kind,
                error: description,
                non_retryable,
            };
            self.fail(&fence, failure).await;
        }
    }
}
