//! The life of an attempt, as data: whether a worker call is current
//! (fencing), and what each report (start, complete, fail) or expiry changes.
//!
//! The server reads an attempt's row inside its transaction, asks [`decide`]
//! what the report does, and writes the [`Outcome`] it gets back. Everything
//! that makes the decision (the attempt, the task's policy, the clock, a
//! jitter value) comes in as an argument, so the rules are tested here as
//! plain functions and written nowhere else.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::decide;
use crate::model::{TaskDefinition, TaskStatus, WorkflowDefinition};
pub use crate::task_metrics::TaskMetric;

/// How many times an attempt lost to infrastructure (a dead worker, a closed
/// session, a restarted server) is retried without spending the task's
/// `retries`.
pub const MAX_LOST_RETRIES: u32 = 3;

/// The statuses of an attempt out with a worker.
pub const ACTIVE: [TaskStatus; 2] = [TaskStatus::Dispatched, TaskStatus::Running];

/// Names one attempt; every worker call carries it. The token is a secret
/// the server generated for this attempt alone.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Fence {
    pub task_run_id: String,
    pub attempt: u32,
    pub token: String,
}

impl std::fmt::Debug for Fence {
    // The token is a credential: it stays out of logs and panic messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fence")
            .field("task_run_id", &self.task_run_id)
            .field("attempt", &self.attempt)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Why an attempt is over without a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The task reported an error.
    Task,
    /// The worker vanished (no heartbeat, process gone, session closed).
    /// Retried without consuming the task's `retries`, [`MAX_LOST_RETRIES`]
    /// times at most.
    Lost,
    /// The attempt ran past `timeout_seconds`.
    Timeout,
    /// The executor could not start it.
    Dispatch,
}

/// A failed attempt, as reported by its worker or decided by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub error: String,
    pub non_retryable: bool,
}

/// A task run's row as a fenced call reads it, with the recorded status of
/// the attempt the call names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    pub status: TaskStatus,
    /// The current attempt number (0 before the first dispatch).
    pub attempt: u32,
    pub token: Option<String>,
    /// Attempts before a manual retry, which do not count against `retries`.
    pub attempt_base: u32,
    /// Attempts lost to infrastructure so far.
    pub lost_count: u32,
    /// When the task run became (or becomes) ready.
    pub ready_at: Option<DateTime<Utc>>,
    /// The status recorded for the attempt the fence names, if it exists.
    pub reported: Option<TaskStatus>,
}

/// What a worker (or the server on its behalf) reports for an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// The worker began running the attempt.
    Start,
    /// The attempt produced its output; with the metrics the task recorded
    /// (checked with [`crate::task_metrics::normalize_task_metrics`]).
    Complete(Value, Vec<TaskMetric>),
    /// The attempt failed; with what the task recorded before it did.
    Fail(Failure, Vec<TaskMetric>),
}

/// The writes a report makes.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Nothing: a repeat of a report that already committed (its reply was
    /// lost), or a start of an attempt already running.
    Unchanged,
    /// The attempt and its task run are running from `at`.
    Started { at: DateTime<Utc> },
    /// The attempt succeeded; the task run is final.
    Succeeded { output: Value, at: DateTime<Utc> },
    /// The attempt failed and the task run waits for another one at
    /// `ready_at`; `lost` says the failure did not spend a retry.
    Retrying {
        error: String,
        ready_at: DateTime<Utc>,
        lost: bool,
        at: DateTime<Utc>,
    },
    /// The attempt failed and so did the task run, for good.
    Failed { error: String, at: DateTime<Utc> },
}

impl Outcome {
    /// True when the task run reached a final status, so its successors and
    /// its run need a look.
    pub fn finishes_task_run(&self) -> bool {
        matches!(self, Outcome::Succeeded { .. } | Outcome::Failed { .. })
    }

    /// The task run's status after the outcome, if it changed.
    pub fn task_status(&self) -> Option<TaskStatus> {
        match self {
            Outcome::Unchanged => None,
            Outcome::Started { .. } => Some(TaskStatus::Running),
            Outcome::Succeeded { .. } => Some(TaskStatus::Success),
            Outcome::Retrying { .. } => Some(TaskStatus::Pending),
            Outcome::Failed { .. } => Some(TaskStatus::Failed),
        }
    }

    /// The attempt's status after the outcome, if it changed.
    pub fn attempt_status(&self) -> Option<TaskStatus> {
        match self {
            Outcome::Unchanged => None,
            Outcome::Started { .. } => Some(TaskStatus::Running),
            Outcome::Succeeded { .. } => Some(TaskStatus::Success),
            Outcome::Retrying { .. } | Outcome::Failed { .. } => Some(TaskStatus::Failed),
        }
    }
}

/// Why a report was refused; it changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The call names an attempt that is not the current one, or one that
    /// is no longer out with a worker.
    Stale {
        current_attempt: u32,
        status: TaskStatus,
    },
    /// The output does not match the task's `output_type`.
    InvalidOutput(String),
}

/// Accepts a call only for the current attempt, in one of `allowed` statuses.
pub fn check(fence: &Fence, current: &Current, allowed: &[TaskStatus]) -> Result<(), Refusal> {
    let is_current =
        current.attempt == fence.attempt && current.token.as_deref() == Some(fence.token.as_str());
    if is_current && allowed.contains(&current.status) {
        Ok(())
    } else {
        Err(Refusal::Stale {
            current_attempt: current.attempt,
            status: current.status,
        })
    }
}

/// True when this very attempt already ended with `outcome`: a worker whose
/// report committed but whose reply was lost sends it again, and must hear
/// "ok" without anything changing.
fn already(fence: &Fence, current: &Current, outcome: TaskStatus) -> bool {
    current.attempt == fence.attempt
        && current.token.as_deref() == Some(fence.token.as_str())
        && current.reported == Some(outcome)
}

/// Decides what `report` does to the attempt `fence` names.
///
/// `output_is_reference` says the output is a marker of an output stored by
/// reference, whose content was checked before it was uploaded. `jitter` is a
/// number in [0, 1) that spreads retry delays (see
/// [`decide::retry_delay`]).
#[allow(clippy::too_many_arguments)]
pub fn decide(
    report: Report,
    fence: &Fence,
    current: &Current,
    task: &TaskDefinition,
    workflow: &WorkflowDefinition,
    output_is_reference: bool,
    now: DateTime<Utc>,
    jitter: f64,
) -> Result<Outcome, Refusal> {
    match report {
        Report::Start => {
            check(fence, current, &ACTIVE)?;
            Ok(if current.status == TaskStatus::Dispatched {
                Outcome::Started { at: now }
            } else {
                Outcome::Unchanged
            })
        }
        Report::Complete(output, _) => {
            if already(fence, current, TaskStatus::Success) {
                return Ok(Outcome::Unchanged);
            }
            check(fence, current, &ACTIVE)?;
            if !output_is_reference {
                crate::types::validate_output(task, workflow, &output)
                    .map_err(Refusal::InvalidOutput)?;
            }
            Ok(Outcome::Succeeded { output, at: now })
        }
        Report::Fail(failure, _) => {
            if already(fence, current, TaskStatus::Failed) {
                return Ok(Outcome::Unchanged);
            }
            check(fence, current, &ACTIVE)?;
            Ok(failed(fence, current, task, failure, now, jitter))
        }
    }
}

/// A failed attempt: another one when the policy allows, else the end.
fn failed(
    fence: &Fence,
    current: &Current,
    task: &TaskDefinition,
    failure: Failure,
    now: DateTime<Utc>,
    jitter: f64,
) -> Outcome {
    let lost = failure.kind == FailureKind::Lost && current.lost_count < MAX_LOST_RETRIES;
    let counted = fence.attempt.saturating_sub(current.attempt_base);
    if !lost && !decide::should_retry(task, counted, failure.non_retryable) {
        return Outcome::Failed {
            error: failure.error,
            at: now,
        };
    }
    let ready_at = if lost {
        // A lost attempt keeps its place in the queue (its first ready time).
        current.ready_at.map_or(now, |first| first.min(now))
    } else {
        // A failed one waits its delay behind newer work.
        let delay = decide::retry_delay(task, counted, jitter);
        now + chrono::Duration::from_std(delay).unwrap_or_default()
    };
    Outcome::Retrying {
        error: failure.error,
        ready_at,
        lost,
        at: now,
    }
}

/// A heartbeat: `Ok(true)` when the worker must stop because its run or
/// attempt was cancelled.
pub fn heartbeat(fence: &Fence, current: &Current) -> Result<bool, Refusal> {
    check(
        fence,
        current,
        &[
            TaskStatus::Dispatched,
            TaskStatus::Running,
            TaskStatus::Cancelled,
        ],
    )?;
    Ok(current.status == TaskStatus::Cancelled)
}

/// Log lines are accepted while the attempt is out, and after a
/// cancellation (the worker flushes what it captured before it stops).
pub fn accepts_logs(fence: &Fence, current: &Current) -> Result<(), Refusal> {
    heartbeat(fence, current).map(drop)
}

/// Why an active attempt is over on the server's clock: past its deadline
/// (a timeout, which spends a retry) or else silent too long (lost).
pub fn expiry(deadline: Option<DateTime<Utc>>, now: DateTime<Utc>) -> FailureKind {
    if deadline.is_some_and(|d| d <= now) {
        FailureKind::Timeout
    } else {
        FailureKind::Lost
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;
    use crate::parse::{ParseOptions, parse_workflow};

    fn workflow(extra: &str) -> WorkflowDefinition {
        let yaml = format!("name: wf\ntasks:\n  - name: t\n    file: t.sh\n{extra}");
        parse_workflow(&yaml, &ParseOptions::default()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn at(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(1_790_000_000_000 + ms).unwrap()
    }

    fn fence(attempt: u32) -> Fence {
        Fence {
            task_run_id: "tr".into(),
            attempt,
            token: format!("tok{attempt}"),
        }
    }

    fn current(status: TaskStatus, attempt: u32) -> Current {
        Current {
            status,
            attempt,
            token: Some(format!("tok{attempt}")),
            attempt_base: 0,
            lost_count: 0,
            ready_at: Some(at(0)),
            reported: Some(status),
        }
    }

    fn failure(kind: FailureKind, non_retryable: bool) -> Failure {
        Failure {
            kind,
            error: "boom".into(),
            non_retryable,
        }
    }

    fn run(
        wf: &WorkflowDefinition,
        report: Report,
        f: &Fence,
        c: &Current,
    ) -> Result<Outcome, Refusal> {
        decide(report, f, c, &wf.tasks[0], wf, false, at(100), 0.5)
    }

    #[test]
    fn start_marks_a_dispatched_attempt_running_once() {
        let wf = workflow("");
        let dispatched = current(TaskStatus::Dispatched, 1);
        assert_eq!(
            run(&wf, Report::Start, &fence(1), &dispatched),
            Ok(Outcome::Started { at: at(100) })
        );
        let running = current(TaskStatus::Running, 1);
        assert_eq!(
            run(&wf, Report::Start, &fence(1), &running),
            Ok(Outcome::Unchanged)
        );
    }

    #[test]
    fn calls_for_another_attempt_or_token_are_stale() {
        let wf = workflow("");
        let running = current(TaskStatus::Running, 2);
        let stale = Err(Refusal::Stale {
            current_attempt: 2,
            status: TaskStatus::Running,
        });
        assert_eq!(run(&wf, Report::Start, &fence(1), &running), stale);
        let forged = Fence {
            token: "guess".into(),
            ..fence(2)
        };
        assert_eq!(
            run(&wf, Report::Complete(json!(1), vec![]), &forged, &running),
            stale
        );
        assert_eq!(heartbeat(&forged, &running), stale.map(|_| false));
    }

    #[test]
    fn a_repeated_report_is_accepted_and_changes_nothing() {
        let wf = workflow("");
        let mut done = current(TaskStatus::Success, 1);
        done.reported = Some(TaskStatus::Success);
        assert_eq!(
            run(&wf, Report::Complete(json!(2), vec![]), &fence(1), &done),
            Ok(Outcome::Unchanged)
        );
        // A failure report after the success is stale, not a repeat.
        assert!(matches!(
            run(
                &wf,
                Report::Fail(failure(FailureKind::Task, false), vec![]),
                &fence(1),
                &done
            ),
            Err(Refusal::Stale { .. })
        ));
        let mut retried = current(TaskStatus::Pending, 1);
        retried.reported = Some(TaskStatus::Failed);
        assert_eq!(
            run(
                &wf,
                Report::Fail(failure(FailureKind::Task, false), vec![]),
                &fence(1),
                &retried
            ),
            Ok(Outcome::Unchanged)
        );
    }

    #[test]
    fn complete_checks_the_declared_output_type_unless_stored_by_reference() {
        let yaml = "name: wf\ntypes:\n  counted: {type: object, properties: {n: {type: integer}}, required: [n]}\ntasks:\n  - name: t\n    file: t.sh\n    output_type: counted\n";
        let wf = parse_workflow(yaml, &ParseOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        let running = current(TaskStatus::Running, 1);
        assert!(matches!(
            run(
                &wf,
                Report::Complete(json!({"n": "x"}), vec![]),
                &fence(1),
                &running
            ),
            Err(Refusal::InvalidOutput(_))
        ));
        assert_eq!(
            run(
                &wf,
                Report::Complete(json!({"n": 1}), vec![]),
                &fence(1),
                &running
            ),
            Ok(Outcome::Succeeded {
                output: json!({"n": 1}),
                at: at(100)
            })
        );
        let marker = json!({"$ork_output_ref": {"key": "k", "bytes": 1}});
        assert!(
            decide(
                Report::Complete(marker, vec![]),
                &fence(1),
                &running,
                &wf.tasks[0],
                &wf,
                true,
                at(100),
                0.5
            )
            .is_ok()
        );
    }

    #[test]
    fn failures_retry_while_the_policy_allows() {
        let wf = workflow("    retries: 1\n    retry_delay_seconds: 10\n");
        let running = current(TaskStatus::Running, 1);
        assert_eq!(
            run(
                &wf,
                Report::Fail(failure(FailureKind::Task, false), vec![]),
                &fence(1),
                &running
            ),
            Ok(Outcome::Retrying {
                error: "boom".into(),
                ready_at: at(10_100),
                lost: false,
                at: at(100)
            })
        );
        // The second attempt used the one retry.
        let second = current(TaskStatus::Running, 2);
        assert_eq!(
            run(
                &wf,
                Report::Fail(failure(FailureKind::Task, false), vec![]),
                &fence(2),
                &second
            ),
            Ok(Outcome::Failed {
                error: "boom".into(),
                at: at(100)
            })
        );
        // Unless a manual retry moved the base.
        let rerun = Current {
            attempt_base: 1,
            ..second
        };
        assert!(matches!(
            run(
                &wf,
                Report::Fail(failure(FailureKind::Timeout, false), vec![]),
                &fence(2),
                &rerun
            ),
            Ok(Outcome::Retrying { lost: false, .. })
        ));
        assert!(matches!(
            run(
                &wf,
                Report::Fail(failure(FailureKind::Task, true), vec![]),
                &fence(1),
                &running
            ),
            Ok(Outcome::Failed { .. })
        ));
    }

    #[test]
    fn lost_attempts_keep_their_place_and_spend_no_retry_a_few_times() {
        let wf = workflow("");
        let mut running = current(TaskStatus::Running, 1);
        assert_eq!(
            run(
                &wf,
                Report::Fail(failure(FailureKind::Lost, false), vec![]),
                &fence(1),
                &running
            ),
            Ok(Outcome::Retrying {
                error: "boom".into(),
                ready_at: at(0),
                lost: true,
                at: at(100)
            })
        );
        running.lost_count = MAX_LOST_RETRIES;
        assert!(matches!(
            run(
                &wf,
                Report::Fail(failure(FailureKind::Lost, false), vec![]),
                &fence(1),
                &running
            ),
            Ok(Outcome::Failed { .. })
        ));
    }

    #[test]
    fn heartbeats_hear_cancellation_and_expiry_tells_timeouts_from_losses() {
        let cancelled = current(TaskStatus::Cancelled, 1);
        assert_eq!(heartbeat(&fence(1), &cancelled), Ok(true));
        assert_eq!(
            heartbeat(&fence(1), &current(TaskStatus::Running, 1)),
            Ok(false)
        );
        assert!(heartbeat(&fence(1), &current(TaskStatus::Success, 1)).is_err());
        assert_eq!(expiry(Some(at(5)), at(5)), FailureKind::Timeout);
        assert_eq!(expiry(Some(at(6)), at(5)), FailureKind::Lost);
        assert_eq!(expiry(None, at(5)), FailureKind::Lost);
    }

    #[test]
    fn fences_never_show_their_token() {
        let shown = format!("{:?}", fence(3));
        assert!(!shown.contains("tok3"), "{shown}");
    }
}
