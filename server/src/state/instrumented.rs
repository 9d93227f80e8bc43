//! A [`StateStore`] that times every operation of the store it wraps: one
//! latency histogram (`ork_state_transaction_duration_seconds{operation}`)
//! per call and, under a request's span, one trace span named after the
//! operation, in this one place for every backend.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tracing::Instrument as _;

use super::*;
use crate::metrics::{OperationHistogram, OperationLabels};

/// Wraps a store; see the module documentation.
pub struct Instrumented {
    inner: Arc<dyn StateStore>,
    latency: OperationHistogram,
}

impl Instrumented {
    pub fn new(inner: Arc<dyn StateStore>, latency: OperationHistogram) -> Self {
        Self { inner, latency }
    }

    async fn timed<T>(&self, operation: &'static str, call: impl Future<Output = T>) -> T {
        let start = Instant::now();
        // A span only under a request's span: the loops' polling (every tick)
        // would otherwise fill the trace backend with one-span traces.
        let out = if tracing::Span::current().is_none() {
            call.await
        } else {
            let span = tracing::info_span!("state", otel.name = operation, operation);
            call.instrument(span).await
        };
        self.latency
            .get_or_create(&OperationLabels { operation })
            .observe(start.elapsed().as_secs_f64());
        out
    }
}

#[async_trait]
impl StateStore for Instrumented {
    fn set_output_store(&self, outputs: Arc<dyn OutputStore>) {
        self.inner.set_output_store(outputs);
    }

    fn set_observer(&self, observer: Arc<dyn CommitObserver>) {
        self.inner.set_observer(observer);
    }

    async fn deploy_workflow(
        &self,
        deploy: NewWorkflowVersion,
        now: DateTime<Utc>,
    ) -> Result<(WorkflowRecord, bool)> {
        self.timed("deploy_workflow", self.inner.deploy_workflow(deploy, now))
            .await
    }

    async fn get_workflow(&self, name: &str) -> Result<Option<WorkflowRecord>> {
        self.timed("get_workflow", self.inner.get_workflow(name))
            .await
    }

    async fn list_workflows(&self) -> Result<Vec<WorkflowRecord>> {
        self.timed("list_workflows", self.inner.list_workflows())
            .await
    }

    async fn delete_workflow(&self, name: &str) -> Result<bool> {
        self.timed("delete_workflow", self.inner.delete_workflow(name))
            .await
    }

    async fn get_version(&self, version: &str) -> Result<Option<Arc<CompiledVersion>>> {
        // Served from a cache almost always: not worth a span per call.
        self.inner.get_version(version).await
    }

    async fn get_version_file(&self, version: &str, path: &str) -> Result<Option<Vec<u8>>> {
        self.timed(
            "get_version_file",
            self.inner.get_version_file(version, path),
        )
        .await
    }

    async fn create_run(&self, new: NewRun, now: DateTime<Utc>) -> Result<RunRecord> {
        self.timed("create_run", self.inner.create_run(new, now))
            .await
    }

    async fn get_run(&self, id: &str) -> Result<Option<RunRecord>> {
        self.timed("get_run", self.inner.get_run(id)).await
    }

    async fn scheduled_workflows(&self) -> Result<Vec<(WorkflowRecord, Option<DateTime<Utc>>)>> {
        self.timed("scheduled_workflows", self.inner.scheduled_workflows())
            .await
    }

    async fn fire_schedule(
        &self,
        workflow: &str,
        fire_time: DateTime<Utc>,
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<RunRecord>> {
        self.timed(
            "fire_schedule",
            self.inner.fire_schedule(workflow, fire_time, owner, now),
        )
        .await
    }

    async fn list_runs(&self, workflow: Option<&str>, limit: u32) -> Result<Vec<RunRecord>> {
        self.timed("list_runs", self.inner.list_runs(workflow, limit))
            .await
    }

    async fn list_task_runs(&self, run_id: &str) -> Result<Vec<TaskRunRecord>> {
        self.timed("list_task_runs", self.inner.list_task_runs(run_id))
            .await
    }

    async fn get_task_run(&self, id: &str) -> Result<Option<TaskRunRecord>> {
        self.timed("get_task_run", self.inner.get_task_run(id))
            .await
    }

    async fn list_attempts(&self, task_run_id: &str) -> Result<Vec<AttemptRecord>> {
        self.timed("list_attempts", self.inner.list_attempts(task_run_id))
            .await
    }

    async fn list_run_attempts(&self, run_id: &str) -> Result<Vec<AttemptRecord>> {
        self.timed("list_run_attempts", self.inner.list_run_attempts(run_id))
            .await
    }

    async fn cancel_run(&self, id: &str, now: DateTime<Utc>) -> Result<Vec<ActiveAttempt>> {
        self.timed("cancel_run", self.inner.cancel_run(id, now))
            .await
    }

    async fn retry_run(
        &self,
        id: &str,
        task: Option<&str>,
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.timed("retry_run", self.inner.retry_run(id, task, owner, now))
            .await
    }

    async fn get_logs(&self, query: &LogQuery) -> Result<Vec<LogRecord>> {
        self.timed("get_logs", self.inner.get_logs(query)).await
    }

    async fn acquire_runs(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<String>> {
        self.timed("acquire_runs", self.inner.acquire_runs(owner, now, limit))
            .await
    }

    async fn renew_leases(&self, owner: &str, now: DateTime<Utc>) -> Result<u64> {
        self.timed("renew_leases", self.inner.renew_leases(owner, now))
            .await
    }

    async fn release_leases(&self, owner: &str) -> Result<()> {
        self.timed("release_leases", self.inner.release_leases(owner))
            .await
    }

    async fn claim_ready(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        limit: u32,
        capacity: &Capacity,
    ) -> Result<Vec<Claim>> {
        self.timed(
            "claim_ready",
            self.inner.claim_ready(owner, now, limit, capacity),
        )
        .await
    }

    async fn release_claim(&self, fence: &Fence) -> Result<bool> {
        self.timed("release_claim", self.inner.release_claim(fence))
            .await
    }

    async fn set_executor_id(&self, fence: &Fence, executor_id: &str) -> Result<()> {
        self.timed(
            "set_executor_id",
            self.inner.set_executor_id(fence, executor_id),
        )
        .await
    }

    async fn waiting_pool_tasks(
        &self,
        owner: &str,
        ready_before: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(String, String)>> {
        self.timed(
            "waiting_pool_tasks",
            self.inner
                .waiting_pool_tasks(owner, ready_before, now, limit),
        )
        .await
    }

    async fn fail_pending(
        &self,
        task_run_id: &str,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.timed(
            "fail_pending",
            self.inner.fail_pending(task_run_id, error, now),
        )
        .await
    }

    async fn fail_attempt(
        &self,
        fence: &Fence,
        failure: &Failure,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.timed("fail_attempt", self.inner.fail_attempt(fence, failure, now))
            .await
    }

    async fn expired_attempts(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        heartbeat_timeout: Duration,
    ) -> Result<Vec<ExpiredAttempt>> {
        self.timed(
            "expired_attempts",
            self.inner.expired_attempts(owner, now, heartbeat_timeout),
        )
        .await
    }

    async fn recover(&self, owner: &str, now: DateTime<Utc>) -> Result<u64> {
        self.timed("recover", self.inner.recover(owner, now)).await
    }

    async fn promote_pending_runs(&self, owner: &str, now: DateTime<Utc>) -> Result<u32> {
        self.timed(
            "promote_pending_runs",
            self.inner.promote_pending_runs(owner, now),
        )
        .await
    }

    async fn wakeups(
        &self,
        owner: &str,
    ) -> Result<Option<futures::stream::BoxStream<'static, ()>>> {
        self.inner.wakeups(owner).await
    }

    async fn next_ready_at(&self) -> Result<Option<DateTime<Utc>>> {
        self.timed("next_ready_at", self.inner.next_ready_at())
            .await
    }

    async fn attempt_spec(&self, fence: &Fence) -> Result<AttemptSpec> {
        self.timed("attempt_spec", self.inner.attempt_spec(fence))
            .await
    }

    async fn start_attempt(&self, fence: &Fence, now: DateTime<Utc>) -> Result<()> {
        self.timed("start_attempt", self.inner.start_attempt(fence, now))
            .await
    }

    async fn heartbeat(&self, fence: &Fence, now: DateTime<Utc>) -> Result<bool> {
        self.timed("heartbeat", self.inner.heartbeat(fence, now))
            .await
    }

    async fn append_logs(&self, fence: &Fence, lines: &[NewLogLine]) -> Result<()> {
        self.timed("append_logs", self.inner.append_logs(fence, lines))
            .await
    }

    async fn complete_attempt(
        &self,
        fence: &Fence,
        output: serde_json::Value,
        metrics: &[TaskMetric],
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.timed(
            "complete_attempt",
            self.inner.complete_attempt(fence, output, metrics, now),
        )
        .await
    }

    async fn check_output(&self, fence: &Fence, output: &serde_json::Value) -> Result<()> {
        self.timed("check_output", self.inner.check_output(fence, output))
            .await
    }

    async fn queue_stats(&self, owner: &str, now: DateTime<Utc>) -> Result<QueueStats> {
        self.timed("queue_stats", self.inner.queue_stats(owner, now))
            .await
    }

    async fn outbox_batch(&self, limit: u32) -> Result<Vec<OutboxEntry>> {
        self.timed("outbox_batch", self.inner.outbox_batch(limit))
            .await
    }

    async fn outbox_ack(&self, ids: &[i64]) -> Result<()> {
        self.timed("outbox_ack", self.inner.outbox_ack(ids)).await
    }
}
