//! Every transition of runs and attempts, each applied once for both
//! backends: worker reports (a batch per transaction), claims, releases,
//! run creation, cancellation, retries and promotion of waiting runs.
//!
//! What a transition does is decided in `ork_domain` (`attempt::decide`,
//! `decide::rerun`, `decide::readiness` through `advance`); this module reads
//! the rows the decision needs, under the backend's locks, and writes what it
//! returns. Lock order, where rows are locked (PostgreSQL): runs by id, then
//! task runs by id.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use ork_domain::attempt::{self, Current, Outcome, Report};
use ork_domain::decide;
use ork_domain::{RunStatus, TaskStatus, TriggerType};

use super::advance;
use super::rows::*;
use super::sql::{Backend, CHUNK, Columns, Conn, Query};
use super::store::refused;
use super::*;

/// A task run as a report batch reads it.
struct Row {
    current: Current,
    run_id: String,
    task_name: String,
    version: String,
    /// For the transitions observers are told.
    workflow: String,
    parallel_index: Option<u32>,
    dispatched_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    deadline_at: Option<DateTime<Utc>>,
}

impl Row {
    /// How the attempt's end counts: a failure reported after the attempt's
    /// deadline is a timeout, whoever noticed it (a launched worker's
    /// supervisor enforces the deadline itself).
    fn outcome(&self, report: &Report, lost: bool, at: DateTime<Utc>) -> AttemptOutcome {
        match report {
            Report::Fail(f, _) if lost || f.kind == FailureKind::Lost => AttemptOutcome::Lost,
            Report::Fail(f, _)
                if f.kind == FailureKind::Task && self.deadline_at.is_some_and(|d| d <= at) =>
            {
                AttemptOutcome::Timeout
            }
            Report::Fail(f, _) => AttemptOutcome::of_failure(f.kind),
            _ => AttemptOutcome::Success,
        }
    }

    fn started(&self, at: DateTime<Utc>) -> Transition {
        Transition::AttemptStarted {
            workflow: self.workflow.clone(),
            task: self.task_name.clone(),
            ready_at: self.current.ready_at,
            started_at: at,
        }
    }

    /// What observers are told of `outcome`.
    fn transitions(&self, fence: &Fence, report: &Report, outcome: &Outcome) -> Vec<Transition> {
        let mut told = Vec::new();
        let (at, error, lost) = match outcome {
            Outcome::Unchanged => return told,
            Outcome::Started { at } => {
                told.push(self.started(*at));
                return told;
            }
            Outcome::Succeeded { at, .. } => {
                if self.started_at.is_none() {
                    // Reported without a start: it started then, too.
                    told.push(self.started(*at));
                }
                (*at, None, false)
            }
            Outcome::Retrying {
                error, lost, at, ..
            } => (*at, Some(error.clone()), *lost),
            Outcome::Failed { error, at } => (*at, Some(error.clone()), false),
        };
        let outcome = self.outcome(report, lost, at);
        told.push(Transition::AttemptFinished(Box::new(FinishedAttempt {
            run_id: self.run_id.clone(),
            workflow: self.workflow.clone(),
            task: self.task_name.clone(),
            task_run_id: fence.task_run_id.clone(),
            attempt: fence.attempt,
            parallel_index: self.parallel_index,
            outcome,
            error,
            dispatched_at: self.dispatched_at.unwrap_or(at),
            // A success reported without a start counts as started then.
            started_at: self.started_at.or(match outcome {
                AttemptOutcome::Success => Some(at),
                _ => None,
            }),
            finished_at: at,
            metrics: report_metrics(report).to_vec(),
        })));
        told
    }
}

/// The metrics a report carries.
fn report_metrics(report: &Report) -> &[TaskMetric] {
    match report {
        Report::Complete(_, metrics) | Report::Fail(_, metrics) => metrics,
        Report::Start => &[],
    }
}

/// An attempt row's new values: status, error, started and finished times.
type AttemptWrite = (TaskStatus, Option<String>, Option<i64>, Option<i64>);

/// What a batch of reports writes, gathered so each kind is one statement.
#[derive(Default)]
struct Writes {
    /// (task run, at)
    started: Vec<(String, i64)>,
    /// (task run, output JSON, at)
    succeeded: Vec<(String, String, i64)>,
    /// (task run, error, ready_at, lost 0/1)
    retrying: Vec<(String, String, i64, i64)>,
    /// (task run, error, at)
    failed: Vec<(String, String, i64)>,
    /// The attempts rows, merged per attempt.
    attempts: BTreeMap<(String, u32), AttemptWrite>,
    /// Task runs that reached a final status, per run.
    finished: BTreeMap<String, (String, BTreeSet<String>)>,
    /// Runs with any change.
    runs: BTreeSet<String>,
    /// Runs a report moved on (anything but a start, which readies nothing
    /// and frees no capacity): their dispatch loops must look.
    moved: BTreeSet<String>,
    /// Task metrics of ended attempts: (task run, attempt, name, value).
    metrics: Vec<(String, u32, String, f64)>,
    /// What observers are told once the batch committed.
    told: Vec<Transition>,
}

impl Writes {
    fn add(&mut self, fence: &Fence, row: &Row, report: &Report, outcome: &Outcome) {
        self.told.extend(row.transitions(fence, report, outcome));
        if !matches!(outcome, Outcome::Unchanged | Outcome::Started { .. }) {
            for m in report_metrics(report) {
                self.metrics.push((
                    fence.task_run_id.clone(),
                    fence.attempt,
                    m.name.clone(),
                    m.value,
                ));
            }
        }
        let id = fence.task_run_id.clone();
        let (started, finished, error) = match outcome {
            Outcome::Unchanged => return,
            Outcome::Started { at } => {
                self.started.push((id.clone(), ms(*at)));
                (Some(ms(*at)), None, None)
            }
            Outcome::Succeeded { output, at } => {
                self.succeeded
                    .push((id.clone(), json_text(output), ms(*at)));
                (Some(ms(*at)), Some(ms(*at)), None)
            }
            Outcome::Retrying {
                error,
                ready_at,
                lost,
                at,
            } => {
                self.retrying
                    .push((id.clone(), error.clone(), ms(*ready_at), i64::from(*lost)));
                (None, Some(ms(*at)), Some(error.clone()))
            }
            Outcome::Failed { error, at } => {
                self.failed.push((id.clone(), error.clone(), ms(*at)));
                (None, Some(ms(*at)), Some(error.clone()))
            }
        };
        let status = outcome.attempt_status().unwrap_or(TaskStatus::Running);
        let entry = self
            .attempts
            .entry((id, fence.attempt))
            .or_insert((status, None, None, None));
        entry.0 = status;
        entry.1 = error.or(entry.1.take());
        entry.2 = entry.2.or(started);
        entry.3 = finished.or(entry.3);
        if outcome.finishes_task_run() {
            self.finished
                .entry(row.run_id.clone())
                .or_insert_with(|| (row.version.clone(), BTreeSet::new()))
                .1
                .insert(row.task_name.clone());
        }
        self.runs.insert(row.run_id.clone());
        if !matches!(outcome, Outcome::Started { .. }) {
            self.moved.insert(row.run_id.clone());
        }
    }

    /// Runs the statements, one per kind of change.
    async fn apply<C: Conn>(&self, tx: &mut C) -> Result<()> {
        for chunk in self.started.chunks(CHUNK) {
            tx.execute(Query::values(
                "UPDATE task_runs SET status = 'running', started_at = v.column2, heartbeat_at = v.column2 \
                 FROM (VALUES ",
                chunk,
                2,
                ") AS v WHERE task_runs.id = v.column1",
                |(id, at), args| {
                    args.push(id.into());
                    args.push((*at).into());
                },
            ))
            .await?;
        }
        for chunk in self.succeeded.chunks(CHUNK) {
            tx.execute(Query::values(
                "UPDATE task_runs SET status = 'success', output = v.column2, error = NULL, \
                 finished_at = v.column3, started_at = COALESCE(task_runs.started_at, v.column3) FROM (VALUES ",
                chunk,
                3,
                ") AS v WHERE task_runs.id = v.column1",
                |(id, output, at), args| {
                    args.push(id.into());
                    args.push(output.into());
                    args.push((*at).into());
                },
            ))
            .await?;
        }
        for chunk in self.retrying.chunks(CHUNK) {
            tx.execute(Query::values(
                "UPDATE task_runs SET status = 'pending', error = v.column2, \
                 ready_at = v.column3, attempt_base = task_runs.attempt_base + v.column4, \
                 lost_count = task_runs.lost_count + v.column4 FROM (VALUES ",
                chunk,
                4,
                ") AS v WHERE task_runs.id = v.column1",
                |(id, error, ready_at, lost), args| {
                    args.push(id.into());
                    args.push(error.into());
                    args.push((*ready_at).into());
                    args.push((*lost).into());
                },
            ))
            .await?;
        }
        for chunk in self.failed.chunks(CHUNK) {
            tx.execute(Query::values(
                "UPDATE task_runs SET status = 'failed', error = v.column2, finished_at = v.column3 FROM (VALUES ",
                chunk,
                3,
                ") AS v WHERE task_runs.id = v.column1",
                |(id, error, at), args| {
                    args.push(id.into());
                    args.push(error.into());
                    args.push((*at).into());
                },
            ))
            .await?;
        }
        let attempts: Vec<_> = self.attempts.iter().collect();
        for chunk in attempts.chunks(CHUNK) {
            tx.execute(Query::values(
                "UPDATE attempts SET status = v.column3, error = COALESCE(v.column4, attempts.error), \
                 started_at = COALESCE(attempts.started_at, v.column5), \
                 finished_at = COALESCE(v.column6, attempts.finished_at) FROM (VALUES ",
                chunk,
                6,
                ") AS v WHERE attempts.task_run_id = v.column1 AND attempts.attempt = v.column2",
                |((id, attempt), (status, error, started, finished)), args| {
                    args.push(id.into());
                    args.push((*attempt).into());
                    args.push(status.as_str().into());
                    args.push(error.clone().into());
                    args.push((*started).into());
                    args.push((*finished).into());
                },
            ))
            .await?;
        }
        for chunk in self.metrics.chunks(CHUNK) {
            tx.execute(Query::values(
                "INSERT INTO attempt_metrics (task_run_id, attempt, name, value) VALUES ",
                chunk,
                4,
                " ON CONFLICT (task_run_id, attempt, name) DO UPDATE SET value = excluded.value",
                |(id, attempt, name, value), args| {
                    args.push(id.into());
                    args.push((*attempt).into());
                    args.push(name.into());
                    args.push((*value).into());
                },
            ))
            .await?;
        }
        let outbox: Vec<(String, u32)> = self.attempts.keys().cloned().collect();
        insert_attempt_outbox(tx, &outbox, Utc::now()).await
    }
}

/// What a batch of reports did, once committed.
pub(super) struct Reported {
    /// One answer per report, in order.
    pub answers: Vec<Result<()>>,
    /// Whether any run changed.
    pub changed: bool,
    /// Whether any run moved on beyond a start: dispatch loops must look.
    pub work: bool,
    /// What to tell observers.
    pub told: Vec<Transition>,
}

#[allow(private_bounds)]
impl<B: Backend> Store<B> {
    /// Applies a batch of reports in one transaction; see [`Attempts::report`].
    pub(super) async fn report_once(
        &self,
        reports: &[(Fence, Report)],
        now: DateTime<Utc>,
    ) -> Result<Reported> {
        let mut tx = self.backend().begin().await?;
        let mut ids: Vec<String> = reports.iter().map(|(f, _)| f.task_run_id.clone()).collect();
        ids.sort();
        ids.dedup();
        if B::ROW_LOCKS {
            tx.fetch_all(
                Query::new(
                    "SELECT id FROM runs WHERE id IN (SELECT run_id FROM task_runs WHERE id = ANY($1)) \
                     ORDER BY id FOR UPDATE",
                )
                .bind(ids.clone()),
            )
            .await?;
        }
        let mut rows: HashMap<String, Row> = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNK) {
            for r in tx
                .fetch_all(
                    Query::new(
                        "SELECT t.id, t.status, t.attempt, t.token, t.attempt_base, t.lost_count, t.ready_at, \
                         t.run_id, t.task_name, r.workflow_version, a.status AS reported, \
                         r.workflow, t.parallel_index, t.dispatched_at, t.started_at, t.deadline_at \
                         FROM task_runs t JOIN runs r ON r.id = t.run_id \
                         LEFT JOIN attempts a ON a.task_run_id = t.id AND a.attempt = t.attempt \
                         WHERE t.id = ANY($1) ORDER BY t.id FOR UPDATE OF t",
                    )
                    .bind(chunk),
                )
                .await?
            {
                let reported = r.opt_text("reported")?.as_deref().map(task_status).transpose()?;
                rows.insert(
                    r.text("id")?,
                    Row {
                        current: Current {
                            status: task_status(&r.text("status")?)?,
                            attempt: to_u32(r.int("attempt")?),
                            token: r.opt_text("token")?,
                            attempt_base: to_u32(r.int("attempt_base")?),
                            lost_count: to_u32(r.int("lost_count")?),
                            ready_at: opt_ms(r.opt_int("ready_at")?),
                            reported,
                        },
                        run_id: r.text("run_id")?,
                        task_name: r.text("task_name")?,
                        version: r.text("workflow_version")?,
                        workflow: r.text("workflow")?,
                        parallel_index: opt_u32(r.opt_int("parallel_index")?),
                        dispatched_at: opt_ms(r.opt_int("dispatched_at")?),
                        started_at: opt_ms(r.opt_int("started_at")?),
                        deadline_at: opt_ms(r.opt_int("deadline_at")?),
                    },
                );
            }
        }
        let mut writes = Writes::default();
        let mut results = Vec::with_capacity(reports.len());
        for (fence, report) in reports {
            let Some(row) = rows.get_mut(&fence.task_run_id) else {
                results.push(Err(Error::NotFound {
                    what: format!("task run {}", fence.task_run_id),
                }));
                continue;
            };
            let version = self.version_in(&mut *tx, &row.version).await?;
            let Some(task) = version.task(&row.task_name) else {
                results.push(Err(Error::Corrupt(format!(
                    "task {} missing from version {}",
                    row.task_name, version.version
                ))));
                continue;
            };
            let by_reference =
                matches!(report, Report::Complete(output, _) if output_ref(output).is_some());
            let decided = attempt::decide(
                report.clone(),
                fence,
                &row.current,
                task,
                &version.definition,
                by_reference,
                now,
                jitter_unit(),
            );
            match decided {
                Ok(outcome) => {
                    // Later reports of the batch see this one's effect.
                    let current = &mut row.current;
                    if let Some(status) = outcome.task_status() {
                        current.status = status;
                    }
                    if let Some(status) = outcome.attempt_status() {
                        current.reported = Some(status);
                    }
                    writes.add(fence, row, report, &outcome);
                    if let Outcome::Started { at } = &outcome {
                        row.started_at = Some(*at);
                    }
                    let current = &mut row.current;
                    if let Outcome::Retrying { ready_at, lost, .. } = &outcome {
                        current.ready_at = Some(*ready_at);
                        current.lost_count += u32::from(*lost);
                        current.attempt_base += u32::from(*lost);
                    }
                    results.push(Ok(()));
                }
                Err(refusal) => results.push(Err(refused(fence, refusal))),
            }
        }
        writes.apply(&mut *tx).await?;
        let env = self.env();
        let mut told = std::mem::take(&mut writes.told);
        for (run_id, (version, tasks)) in &writes.finished {
            let version = self.version_in(&mut *tx, version).await?;
            told.extend(
                advance::after_finish(
                    &mut *tx,
                    &env,
                    &version,
                    run_id,
                    tasks.iter().cloned().collect(),
                    now,
                )
                .await?,
            );
        }
        // Other replicas' loops are told about the runs that moved on only,
        // as this one's are (see `Attempts::report`).
        let moved: Vec<String> = writes.moved.into_iter().collect();
        self.backend().wake_owners(&mut tx, &moved).await?;
        tx.commit().await?;
        Ok(Reported {
            answers: results,
            changed: !writes.runs.is_empty(),
            work: !moved.is_empty(),
            told,
        })
    }

    /// Claims ready task runs; see [`Scheduling::claim_ready`]. A pool
    /// attempt is running from its claim: the assignment pushed right after
    /// the commit is its start (its worker sends no StartTask).
    pub(super) async fn claim_once(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        limit: u32,
        capacity: &Capacity,
    ) -> Result<(Vec<Claim>, Vec<Transition>)> {
        let mut tx = self.backend().begin().await?;
        let chosen = tx
            .fetch_all(claim_candidates(owner, now, limit, capacity))
            .await?;
        if chosen.is_empty() {
            tx.commit().await?;
            return Ok((Vec::new(), Vec::new()));
        }
        let mut tokens = Vec::with_capacity(chosen.len());
        for row in &chosen {
            tokens.push((row.text("id")?, new_token()?));
        }
        let mut claimed = Vec::with_capacity(tokens.len());
        for chunk in tokens.chunks(CHUNK) {
            let rows = tx
                .fetch_all(Query::values(
                    "UPDATE task_runs SET status = CASE WHEN executor = 'workers' THEN 'running' \
                     ELSE 'dispatched' END, attempt = attempt + 1, token = v.column2, \
                     dispatched_at = v.column3, \
                     started_at = CASE WHEN executor = 'workers' THEN v.column3 ELSE NULL END, \
                     heartbeat_at = v.column3, deadline_at = v.column3 + timeout_seconds * 1000 FROM (VALUES ",
                    chunk,
                    3,
                    ") AS v WHERE task_runs.id = v.column1 AND task_runs.status = 'pending' \
                     RETURNING id, attempt, token, run_id, task_name, executor, input, parallel_index, \
                     parallel_count, deadline_at, ready_at",
                    |(id, token), args| {
                        args.push(id.into());
                        args.push(token.into());
                        args.push(ms(now).into());
                    },
                ))
                .await?;
            claimed.extend(rows);
        }
        // The spec of each attempt, so executors never read the store: runs
        // in one read, versions and task files from the store's caches.
        let mut runs: Vec<String> = claimed
            .iter()
            .map(|r| r.text("run_id"))
            .collect::<Result<_>>()?;
        runs.sort();
        runs.dedup();
        let mut workflows: HashMap<String, (String, String)> = HashMap::new();
        for chunk in runs.chunks(CHUNK) {
            for r in tx
                .fetch_all(
                    Query::new(
                        "SELECT id, workflow, workflow_version FROM runs WHERE id = ANY($1)",
                    )
                    .bind(chunk),
                )
                .await?
            {
                workflows.insert(
                    r.text("id")?,
                    (r.text("workflow")?, r.text("workflow_version")?),
                );
            }
        }
        let mut claims = Vec::with_capacity(claimed.len());
        let mut told = Vec::new();
        for r in &claimed {
            let fence = current_fence(r)?;
            let run_id = r.text("run_id")?;
            let (workflow, version) = workflows
                .get(&run_id)
                .ok_or_else(|| Error::Corrupt(format!("run {run_id} vanished while claiming")))?;
            let spec = self
                .spec_in(&mut *tx, &fence, r, workflow.clone(), version)
                .await?;
            let executor = r.text("executor")?;
            if executor == ork_domain::WORKERS_EXECUTOR {
                // A pool attempt starts with its claim.
                told.push(Transition::AttemptStarted {
                    workflow: workflow.clone(),
                    task: spec.task_name.clone(),
                    ready_at: opt_ms(r.opt_int("ready_at")?),
                    started_at: now,
                });
            }
            claims.push(Claim {
                fence,
                run_id,
                task_name: spec.task_name.clone(),
                executor,
                spec,
            });
        }
        claims.sort_by(|a, b| a.fence.task_run_id.cmp(&b.fence.task_run_id));
        for chunk in claims.chunks(CHUNK) {
            tx.execute(Query::values(
                "INSERT INTO attempts (task_run_id, attempt, status, dispatched_at, started_at) VALUES ",
                chunk,
                5,
                "",
                |c, args| {
                    let pooled = c.executor == ork_domain::WORKERS_EXECUTOR;
                    let status = if pooled {
                        TaskStatus::Running
                    } else {
                        TaskStatus::Dispatched
                    };
                    args.push(c.fence.task_run_id.as_str().into());
                    args.push(c.fence.attempt.into());
                    args.push(status.as_str().into());
                    args.push(ms(now).into());
                    args.push(pooled.then(|| ms(now)).into());
                },
            ))
            .await?;
        }
        let outbox: Vec<(String, u32)> = claims
            .iter()
            .map(|c| (c.fence.task_run_id.clone(), c.fence.attempt))
            .collect();
        insert_attempt_outbox(&mut *tx, &outbox, now).await?;
        tx.commit().await?;
        Ok((claims, told))
    }

    pub(super) async fn release_claim_once(&self, fence: &Fence) -> Result<bool> {
        let mut tx = self.backend().begin().await?;
        let released = tx
            .execute(
                Query::new(
                    "UPDATE task_runs SET status = 'pending', attempt = attempt - 1, token = NULL, \
                     dispatched_at = NULL, started_at = NULL, heartbeat_at = NULL, deadline_at = NULL \
                     WHERE id = $1 AND attempt = $2 AND token = $3 AND status IN ('dispatched', 'running')",
                )
                .bind(&fence.task_run_id)
                .bind(fence.attempt)
                .bind(&fence.token),
            )
            .await?
            == 1;
        if released {
            tx.execute(
                Query::new("DELETE FROM attempts WHERE task_run_id = $1 AND attempt = $2")
                    .bind(&fence.task_run_id)
                    .bind(fence.attempt),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(released)
    }

    pub(super) async fn create_run_tx(
        &self,
        new: &NewRun,
        now: DateTime<Utc>,
    ) -> Result<(String, Vec<Transition>)> {
        let version = self.current_version(&new.workflow).await?;
        let mut tx = self.backend().begin().await?;
        let created = self.insert_run(&mut *tx, new, &version, now).await?;
        tx.commit().await?;
        Ok(created)
    }

    /// Inserts a run, its labels and its task runs, readying its roots,
    /// inside `tx`; returns its id and what to tell observers.
    pub(super) async fn insert_run<C: Conn>(
        &self,
        tx: &mut C,
        new: &NewRun,
        version: &CompiledVersion,
        now: DateTime<Utc>,
    ) -> Result<(String, Vec<Transition>)> {
        let run_id = new_id();
        // Declared inputs get their defaults, and a mismatch names its field.
        let input = ork_domain::inputs::apply_inputs(&version.definition, &new.input)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        // Runs above the workflow's `concurrency` wait as `pending`; the
        // scheduler promotes them as running ones end. The workflow's row
        // lock makes the count and the insert one step across replicas.
        let waits = match version.definition.concurrency {
            Some(cap) => {
                if B::ROW_LOCKS {
                    tx.fetch_optional(
                        Query::new("SELECT name FROM workflows WHERE name = $1 FOR UPDATE")
                            .bind(&new.workflow),
                    )
                    .await?;
                }
                let row = tx
                    .fetch_optional(
                        Query::new(
                            "SELECT COUNT(*) AS n FROM runs WHERE workflow = $1 AND status IN ('running', 'pending')",
                        )
                        .bind(&new.workflow),
                    )
                    .await?;
                let active = row.map(|r| r.int("n")).transpose()?.unwrap_or(0);
                active >= i64::from(cap)
            }
            None => false,
        };
        tx.execute(
            Query::new(
                "INSERT INTO runs (id, workflow, workflow_version, status, triggered_by, input, created_at, \
                 started_at, owner, lease_expires, labels) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(&run_id)
            .bind(&new.workflow)
            .bind(&version.version)
            .bind(if waits { "pending" } else { "running" })
            .bind(new.triggered_by.as_str())
            .bind(json_text(&input))
            .bind(ms(now))
            .bind((!waits).then(|| ms(now)))
            .bind(&new.owner)
            .bind(ms(now) + self.lease_ms())
            .bind(super::run_history::labels_json(&new.labels)),
        )
        .await?;
        super::run_history::insert_labels(tx, &run_id, &new.labels, now).await?;
        let rows: Vec<NewTaskRunRow<'_>> = version
            .definition
            .tasks
            .iter()
            .flat_map(initial_rows)
            .collect();
        insert_task_runs(tx, &run_id, &rows, now).await?;
        let mut told = Vec::new();
        if !waits {
            told.push(Transition::RunStarted {
                run_id: run_id.clone(),
                workflow: new.workflow.clone(),
            });
            told.extend(advance::evaluate_all(tx, &self.env(), version, &run_id, now).await?);
        }
        insert_outbox(tx, OutboxKind::Run, &run_id, None).await?;
        Ok((run_id, told))
    }

    pub(super) async fn fire_schedule_once(
        &self,
        workflow: &str,
        fire_time: DateTime<Utc>,
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<(String, Vec<Transition>)>> {
        let version = self.current_version(workflow).await?;
        let mut tx = self.backend().begin().await?;
        // The unique (workflow, fire_time) key makes a fire happen once,
        // however many schedulers see it due: a concurrent twin insert waits
        // for this transaction and then does nothing.
        let claimed = tx
            .execute(
                Query::new(
                    "INSERT INTO schedule_fires (workflow, fire_time, run_id) VALUES ($1, $2, '') \
                     ON CONFLICT (workflow, fire_time) DO NOTHING",
                )
                .bind(workflow)
                .bind(ms(fire_time)),
            )
            .await?;
        if claimed == 0 {
            return Ok(None);
        }
        let new = NewRun {
            workflow: workflow.to_owned(),
            input: serde_json::json!({
                "scheduled_for": fire_time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            }),
            triggered_by: TriggerType::Schedule,
            owner: owner.to_owned(),
            labels: Default::default(),
        };
        let (run_id, mut told) = self.insert_run(&mut *tx, &new, &version, now).await?;
        told.insert(
            0,
            Transition::ScheduleFired {
                workflow: workflow.to_owned(),
            },
        );
        tx.execute(
            Query::new(
                "UPDATE schedule_fires SET run_id = $1 WHERE workflow = $2 AND fire_time = $3",
            )
            .bind(&run_id)
            .bind(workflow)
            .bind(ms(fire_time)),
        )
        .await?;
        tx.commit().await?;
        Ok(Some((run_id, told)))
    }

    pub(super) async fn cancel_run_once(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<(Vec<ActiveAttempt>, Vec<Transition>)> {
        let mut tx = self.backend().begin().await?;
        let run = tx
            .fetch_optional(
                Query::new(
                    "SELECT status, workflow, created_at, started_at FROM runs WHERE id = $1 FOR UPDATE",
                )
                .bind(id),
            )
            .await?
            .ok_or_else(|| Error::NotFound {
                what: format!("run {id}"),
            })?;
        let status = run.text("status")?;
        let workflow = run.text("workflow")?;
        if RunStatus::parse(&status).is_some_and(RunStatus::is_terminal) {
            return Err(Error::FailedPrecondition(format!(
                "run {id} already ended `{status}`; there is nothing to cancel"
            )));
        }
        // Locking every unfinished task run first waits out a claim in
        // flight, so an attempt it dispatches is seen (and cancelled) here.
        let rows = tx
            .fetch_all(
                Query::new(
                    "SELECT id, status, attempt, token, executor, task_name, parallel_index, dispatched_at, \
                     started_at FROM task_runs \
                     WHERE run_id = $1 AND status IN ('pending', 'dispatched', 'running') ORDER BY id FOR UPDATE",
                )
                .bind(id),
            )
            .await?;
        let mut active = Vec::new();
        let mut told = Vec::new();
        for r in &rows {
            if task_status(&r.text("status")?)?.is_active() {
                let fence = current_fence(r)?;
                told.push(Transition::AttemptFinished(Box::new(FinishedAttempt {
                    run_id: id.to_owned(),
                    workflow: workflow.clone(),
                    task: r.text("task_name")?,
                    task_run_id: fence.task_run_id.clone(),
                    attempt: fence.attempt,
                    parallel_index: opt_u32(r.opt_int("parallel_index")?),
                    outcome: AttemptOutcome::Cancelled,
                    error: Some("cancelled".to_owned()),
                    dispatched_at: opt_ms(r.opt_int("dispatched_at")?).unwrap_or(now),
                    started_at: opt_ms(r.opt_int("started_at")?),
                    finished_at: now,
                    metrics: Vec::new(),
                })));
                active.push(ActiveAttempt {
                    fence,
                    executor: r.text("executor")?,
                });
            }
        }
        let out: Vec<(String, u32)> = active
            .iter()
            .map(|a| (a.fence.task_run_id.clone(), a.fence.attempt))
            .collect();
        for chunk in out.chunks(CHUNK) {
            tx.execute(Query::values(
                "UPDATE attempts SET status = 'cancelled', error = 'cancelled', finished_at = v.column3 \
                 FROM (VALUES ",
                chunk,
                3,
                ") AS v WHERE attempts.task_run_id = v.column1 AND attempts.attempt = v.column2",
                |(id, attempt), args| {
                    args.push(id.into());
                    args.push((*attempt).into());
                    args.push(ms(now).into());
                },
            ))
            .await?;
        }
        insert_attempt_outbox(&mut *tx, &out, now).await?;
        tx.execute(
            Query::new(
                "UPDATE task_runs SET status = 'cancelled', error = 'cancelled', finished_at = $1 \
                 WHERE run_id = $2 AND status IN ('pending', 'dispatched', 'running')",
            )
            .bind(ms(now))
            .bind(id),
        )
        .await?;
        tx.execute(
            Query::new("UPDATE runs SET status = 'cancelled', finished_at = $1 WHERE id = $2")
                .bind(ms(now))
                .bind(id),
        )
        .await?;
        told.push(run_finished(&run, id, RunStatus::Cancelled, now)?);
        insert_outbox(&mut *tx, OutboxKind::Run, id, None).await?;
        tx.commit().await?;
        Ok((active, told))
    }

    pub(super) async fn retry_run_once(
        &self,
        id: &str,
        task: Option<&str>,
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Transition>> {
        let run = self.get_run(id).await?.ok_or_else(|| Error::NotFound {
            what: format!("run {id}"),
        })?;
        let version = {
            let mut conn = self.backend().read().await?;
            self.version_in(&mut *conn, &run.workflow_version).await?
        };
        let mut tx = self.backend().begin().await?;
        // Read again under the run's lock: another replica may have retried
        // it in the meantime.
        let status = tx
            .fetch_optional(Query::new("SELECT status FROM runs WHERE id = $1 FOR UPDATE").bind(id))
            .await?
            .ok_or_else(|| Error::NotFound {
                what: format!("run {id}"),
            })?
            .text("status")?;
        let status = RunStatus::parse(&status)
            .ok_or_else(|| Error::Corrupt(format!("run status `{status}`")))?;
        let unsuccessful = if task.is_none() {
            tx.fetch_all(
                Query::new(
                    "SELECT DISTINCT task_name FROM task_runs WHERE run_id = $1 \
                     AND status IN ('failed', 'cancelled', 'skipped')",
                )
                .bind(id),
            )
            .await?
            .iter()
            .map(|r| r.text("task_name"))
            .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        let plan = decide::rerun(
            id,
            status,
            &version.definition,
            &version.dag,
            task,
            unsuccessful,
        )
        .map_err(|e| match e {
            decide::RerunError::UnknownTask { .. } => Error::InvalidArgument(e.to_string()),
            _ => Error::FailedPrecondition(e.to_string()),
        })?;
        for name in &plan.tasks {
            let Some(def) = version.task(name) else {
                continue;
            };
            if plan.expand_again.contains(name) {
                // Its items may change: expand again from scratch.
                tx.execute(
                    Query::new("DELETE FROM task_runs WHERE run_id = $1 AND task_name = $2")
                        .bind(id)
                        .bind(name),
                )
                .await?;
                insert_task_runs(&mut *tx, id, &initial_rows(def), now).await?;
                continue;
            }
            let filter = if plan.only_unsuccessful {
                " AND status IN ('failed', 'cancelled', 'skipped')"
            } else {
                ""
            };
            tx.execute(
                Query::new(format!(
                    "UPDATE task_runs SET status = 'pending', attempt_base = attempt, lost_count = 0, token = NULL, \
                     input = NULL, output = NULL, error = NULL, ready_at = NULL, dispatched_at = NULL, \
                     started_at = NULL, finished_at = NULL, heartbeat_at = NULL, \
                     deadline_at = NULL WHERE run_id = $1 AND task_name = $2{filter}"
                ))
                .bind(id)
                .bind(name),
            )
            .await?;
        }
        tx.execute(
            Query::new(
                "UPDATE runs SET status = 'running', finished_at = NULL, owner = $2, lease_expires = $3 \
                 WHERE id = $1",
            )
            .bind(id)
            .bind(owner)
            .bind(ms(now) + self.lease_ms()),
        )
        .await?;
        let mut told = vec![Transition::RunStarted {
            run_id: id.to_owned(),
            workflow: run.workflow.clone(),
        }];
        told.extend(advance::evaluate_all(&mut *tx, &self.env(), &version, id, now).await?);
        insert_outbox(&mut *tx, OutboxKind::Run, id, None).await?;
        tx.commit().await?;
        Ok(told)
    }

    /// Fails a task run still pending, without an attempt; see
    /// [`Scheduling::fail_pending`].
    pub(super) async fn fail_pending_once(
        &self,
        task_run_id: &str,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<(bool, Vec<Transition>)> {
        let mut tx = self.backend().begin().await?;
        if B::ROW_LOCKS {
            tx.fetch_optional(
                Query::new(
                    "SELECT id FROM runs WHERE id = (SELECT run_id FROM task_runs WHERE id = $1) FOR UPDATE",
                )
                .bind(task_run_id),
            )
            .await?;
        }
        let Some(row) = tx
            .fetch_optional(
                Query::new(
                    "SELECT t.run_id, t.task_name, r.workflow_version FROM task_runs t \
                     JOIN runs r ON r.id = t.run_id WHERE t.id = $1 AND t.status = 'pending' FOR UPDATE OF t",
                )
                .bind(task_run_id),
            )
            .await?
        else {
            return Ok((false, Vec::new()));
        };
        let run_id = row.text("run_id")?;
        let version = self
            .version_in(&mut *tx, &row.text("workflow_version")?)
            .await?;
        advance::finish_unstarted(
            &mut *tx,
            &[task_run_id.to_owned()],
            TaskStatus::Failed,
            None,
            Some(error),
            now,
        )
        .await?;
        let told: Vec<Transition> = advance::after_finish(
            &mut *tx,
            &self.env(),
            &version,
            &run_id,
            vec![row.text("task_name")?],
            now,
        )
        .await?
        .into_iter()
        .collect();
        insert_outbox(&mut *tx, OutboxKind::Run, &run_id, None).await?;
        self.backend()
            .wake_owners(&mut tx, std::slice::from_ref(&run_id))
            .await?;
        tx.commit().await?;
        Ok((true, told))
    }

    /// Starts one waiting run if its workflow's cap allows; true when it did.
    pub(super) async fn promote_once(
        &self,
        id: &str,
        workflow: &str,
        version: &str,
        now: DateTime<Utc>,
    ) -> Result<(bool, Vec<Transition>)> {
        let mut tx = self.backend().begin().await?;
        let version = self.version_in(&mut *tx, version).await?;
        let cap = version.definition.concurrency.map_or(i64::MAX, i64::from);
        // Under its workflow's lock (the lock insert_run takes too): the count
        // and the start are one step.
        if B::ROW_LOCKS {
            tx.fetch_optional(
                Query::new("SELECT name FROM workflows WHERE name = $1 FOR UPDATE").bind(workflow),
            )
            .await?;
        }
        let running = tx
            .fetch_optional(
                Query::new(
                    "SELECT COUNT(*) AS n FROM runs WHERE workflow = $1 AND status = 'running'",
                )
                .bind(workflow),
            )
            .await?
            .map(|r| r.int("n"))
            .transpose()?
            .unwrap_or(0);
        if running >= cap {
            return Ok((false, Vec::new()));
        }
        let started = tx
            .execute(
                Query::new(
                    "UPDATE runs SET status = 'running', started_at = $1 WHERE id = $2 AND status = 'pending'",
                )
                .bind(ms(now))
                .bind(id),
            )
            .await?;
        if started != 1 {
            return Ok((false, Vec::new()));
        }
        let mut told = vec![Transition::RunStarted {
            run_id: id.to_owned(),
            workflow: workflow.to_owned(),
        }];
        told.extend(advance::evaluate_all(&mut *tx, &self.env(), &version, id, now).await?);
        insert_outbox(&mut *tx, OutboxKind::Run, id, None).await?;
        tx.commit().await?;
        Ok((true, told))
    }
}

/// Picks the task runs a claim takes, oldest ready first, and locks them
/// (skipping rows another replica is claiming):
/// - launched task runs without a cap, up to `capacity.launched`;
/// - capped ones (`concurrency`), as many per (run, task) as the cap leaves;
/// - pool task runs, per handler, up to its free slots.
///
/// Row locks cannot sit beside window functions in one SELECT, so the capped
/// candidates are ranked first and locked in a second step.
///
/// The owned-run filter of the plain and pooled parts is an `EXISTS`, not
/// `run_id IN (…)`: SQLite's planner otherwise walks every pending row of
/// the owned runs (an index on `run_id`) and sorts them, where the partial
/// ready indexes, in `(ready_at, id)` order, stop at the claim's limit.
fn claim_candidates(owner: &str, now: DateTime<Utc>, limit: u32, capacity: &Capacity) -> Query {
    let mut sql = String::from(
        "WITH owned AS ( \
             SELECT id FROM runs WHERE owner = $3 AND lease_expires >= $1 AND status IN ('pending', 'running') \
         ), plain AS ( \
             SELECT t.id, t.ready_at FROM task_runs t \
             WHERE t.status = 'pending' AND t.ready_at IS NOT NULL AND t.executor <> 'workers' \
                 AND t.ready_at <= $1 AND t.concurrency IS NULL \
                 AND EXISTS (SELECT 1 FROM owned o WHERE o.id = t.run_id) \
             ORDER BY t.ready_at, t.id LIMIT $2 \
             FOR UPDATE OF t SKIP LOCKED \
         ), ranked AS ( \
             SELECT id FROM ( \
                 SELECT r.id, r.concurrency, COALESCE(a.n, 0) AS active, \
                     ROW_NUMBER() OVER (PARTITION BY r.run_id, r.task_name \
                         ORDER BY r.ready_at, r.parallel_index, r.id) AS rn \
                 FROM task_runs r LEFT JOIN ( \
                     SELECT run_id, task_name, COUNT(*) AS n FROM task_runs \
                     WHERE status IN ('dispatched', 'running') AND concurrency IS NOT NULL \
                         AND run_id IN (SELECT id FROM owned) \
                     GROUP BY run_id, task_name) a ON a.run_id = r.run_id AND a.task_name = r.task_name \
                 WHERE r.status = 'pending' AND r.ready_at IS NOT NULL AND r.executor <> 'workers' \
                     AND r.ready_at <= $1 AND r.concurrency IS NOT NULL \
                     AND r.run_id IN (SELECT id FROM owned)) c \
             WHERE rn + active <= concurrency \
         ), capped AS ( \
             SELECT t.id, t.ready_at FROM task_runs t \
             WHERE t.id IN (SELECT id FROM ranked) AND t.status = 'pending' \
             ORDER BY t.ready_at, t.id LIMIT $2 \
             FOR UPDATE OF t SKIP LOCKED \
         ), launched AS ( \
             SELECT id, ready_at FROM (SELECT id, ready_at FROM plain UNION ALL SELECT id, ready_at FROM capped) l \
             ORDER BY ready_at, id LIMIT $4 \
         )",
    );
    let mut args: Vec<super::sql::Arg> = vec![
        ms(now).into(),
        limit.into(),
        owner.into(),
        i64::from(capacity.launched.min(limit)).into(),
    ];
    // Pool task runs, handler by handler: each an index range scan that
    // stops at the handler's free slots.
    let free: Vec<(&String, &u32)> = capacity.pool.iter().filter(|(_, n)| **n > 0).collect();
    let mut pooled = Vec::new();
    for (handler, n) in free {
        args.push(handler.as_str().into());
        args.push(i64::from((*n).min(limit)).into());
        let (h, f) = (args.len() - 1, args.len());
        pooled.push(format!(
            "SELECT id, ready_at FROM (SELECT t.id, t.ready_at FROM task_runs t \
             WHERE t.status = 'pending' AND t.ready_at IS NOT NULL AND t.executor = 'workers' \
                 AND t.handler = ${h} AND t.ready_at <= $1 \
                 AND EXISTS (SELECT 1 FROM owned o WHERE o.id = t.run_id) \
             ORDER BY t.ready_at, t.id LIMIT ${f} FOR UPDATE OF t SKIP LOCKED) p{h}"
        ));
    }
    sql.push_str(" SELECT id FROM (SELECT id, ready_at FROM launched");
    for p in pooled {
        sql.push_str(" UNION ALL ");
        sql.push_str(&p);
    }
    sql.push_str(") u ORDER BY ready_at, id LIMIT $2");
    Query {
        sql: sql.into(),
        args,
    }
}
