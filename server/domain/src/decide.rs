//! Pure scheduling decisions: when a task is ready, when a run is over, how
//! many instances a fan-out gets, and whether and when to retry. The server
//! calls these inside its transactions; nothing here reads a clock.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::dag::Dag;

use crate::model::{
    DEFAULT_RETRY_MAX_DELAY_SECONDS, OnFailure, Parallelism, RetryBackoff, RunStatus,
    TaskDefinition, WorkflowDefinition,
};

/// The instances of one dependency, by outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepSummary {
    pub task: String,
    pub total: u32,
    pub succeeded: u32,
    /// Failed, skipped or cancelled.
    pub unsuccessful: u32,
}

impl DepSummary {
    /// Instances that have not reached a final status yet.
    pub fn unfinished(&self) -> u32 {
        self.total
            .saturating_sub(self.succeeded)
            .saturating_sub(self.unsuccessful)
    }
}

/// Whether a pending task can start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Some dependencies still have unfinished instances.
    Waiting {
        on: Vec<String>,
    },
    Ready,
    /// A dependency did not succeed and the task has `on_failure: skip`.
    Skip {
        reason: String,
    },
}

/// Decides whether `task` can start, given the state of its dependencies.
pub fn readiness(task: &TaskDefinition, deps: &[DepSummary]) -> Readiness {
    let waiting: Vec<String> = deps
        .iter()
        .filter(|d| d.unfinished() > 0)
        .map(|d| d.task.clone())
        .collect();
    if !waiting.is_empty() {
        return Readiness::Waiting { on: waiting };
    }
    if task.on_failure == OnFailure::Skip {
        let reasons: Vec<String> = deps
            .iter()
            .filter(|d| d.unsuccessful > 0)
            .map(|d| {
                if d.total <= 1 {
                    format!("upstream task `{}` did not succeed", d.task)
                } else {
                    format!(
                        "{} of {} instances of upstream task `{}` did not succeed",
                        d.unsuccessful, d.total, d.task
                    )
                }
            })
            .collect();
        if !reasons.is_empty() {
            return Readiness::Skip {
                reason: reasons.join("; "),
            };
        }
    }
    Readiness::Ready
}

/// Task runs of one run, by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunTally {
    pub total: u32,
    pub unfinished: u32,
    pub success: u32,
    pub failed: u32,
    pub skipped: u32,
    pub cancelled: u32,
}

/// The final status of a run, or `None` while task runs are unfinished.
/// A failure outranks a cancellation; skipped tasks alone do not fail a run.
pub fn run_outcome(t: &RunTally) -> Option<RunStatus> {
    if t.unfinished > 0 {
        None
    } else if t.failed > 0 {
        Some(RunStatus::Failed)
    } else if t.cancelled > 0 {
        Some(RunStatus::Cancelled)
    } else {
        Some(RunStatus::Success)
    }
}

/// How many instances a fanned-out task gets.
#[derive(Debug, Clone, PartialEq)]
pub enum FanOut {
    Count(u32),
    /// One instance per element, in order.
    Items(Vec<Value>),
}

/// Why a fan-out could not be expanded; the server fails the task with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FanOutError {
    #[error("`{reference}` is missing: the output of task `{task}` has no field `{key}`")]
    MissingField {
        reference: String,
        task: String,
        key: String,
    },
    #[error("`{reference}` must be {expected}, found {found}")]
    WrongType {
        reference: String,
        expected: &'static str,
        found: String,
    },
    #[error(
        "`{reference}` asks for {count} instances, more than the limit of {max}; \
         split the work into fewer, larger items (the server's --max-fan-out)"
    )]
    TooMany {
        reference: String,
        count: u64,
        max: u32,
    },
}

/// Expands `parallel` given the output of the task it refers to (ignored for
/// a static count). `max` is the server's limit on instances per task.
pub fn fan_out(
    parallel: &Parallelism,
    upstream_output: &Value,
    max: u32,
) -> Result<FanOut, FanOutError> {
    let too_many = |reference: String, count: u64| FanOutError::TooMany {
        reference,
        count,
        max,
    };
    match parallel {
        Parallelism::Static(n) => {
            if *n > max {
                return Err(too_many(format!("parallel: {n}"), u64::from(*n)));
            }
            Ok(FanOut::Count(*n))
        }
        Parallelism::CountRef(r) | Parallelism::ForEach(r) => {
            let reference = r.to_string();
            let mut value = upstream_output;
            for (depth, key) in r.path.iter().enumerate() {
                value = value
                    .get(key.as_str())
                    .ok_or_else(|| FanOutError::MissingField {
                        reference: reference.clone(),
                        task: r.task.clone(),
                        key: r.path[..=depth].join("."),
                    })?;
            }
            if let Parallelism::CountRef(_) = parallel {
                let count = value.as_u64().ok_or_else(|| FanOutError::WrongType {
                    reference: reference.clone(),
                    expected: "a non-negative integer",
                    found: describe(value),
                })?;
                match u32::try_from(count) {
                    Ok(c) if c <= max => Ok(FanOut::Count(c)),
                    _ => Err(too_many(reference, count)),
                }
            } else {
                let items = value.as_array().ok_or_else(|| FanOutError::WrongType {
                    reference: reference.clone(),
                    expected: "an array",
                    found: describe(value),
                })?;
                let count = u64::try_from(items.len()).unwrap_or(u64::MAX);
                if count > u64::from(max) {
                    return Err(too_many(reference, count));
                }
                Ok(FanOut::Items(items.clone()))
            }
        }
    }
}

/// "a string `\"3\"`": the JSON type and a short preview of the value.
fn describe(value: &Value) -> String {
    let kind = match value {
        Value::Null => return "null".to_owned(),
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "the number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    let text = value.to_string();
    let preview = match text.char_indices().nth(60) {
        None => text,
        Some((at, _)) => format!("{}...", &text[..at]),
    };
    format!("{kind} `{preview}`")
}

/// Whether a failed attempt gets another one. `failed_attempt` counts from 1;
/// `retries` is the number of extra attempts after the first.
pub fn should_retry(task: &TaskDefinition, failed_attempt: u32, non_retryable: bool) -> bool {
    !non_retryable && failed_attempt.max(1) <= task.retries
}

/// How long to wait before the attempt after `failed_attempt`.
///
/// Fixed backoff waits `retry_delay_seconds` every time. Exponential backoff
/// doubles it per attempt, spreads it by ±20% using `jitter_unit` (0..1, from
/// the caller, so this stays deterministic) to keep retries of a fan-out from
/// arriving together, and caps it at `retry_max_delay_seconds`.
pub fn retry_delay(task: &TaskDefinition, failed_attempt: u32, jitter_unit: f64) -> Duration {
    let base = f64::from(task.retry_delay_seconds);
    match task.retry_backoff {
        RetryBackoff::Fixed => Duration::from_secs(u64::from(task.retry_delay_seconds)),
        RetryBackoff::Exponential => {
            let cap = f64::from(
                task.retry_max_delay_seconds
                    .unwrap_or(DEFAULT_RETRY_MAX_DELAY_SECONDS),
            );
            let exponent = failed_attempt.max(1).saturating_sub(1).min(62);
            let unit = if jitter_unit.is_finite() {
                jitter_unit.clamp(0.0, 1.0)
            } else {
                0.5
            };
            let factor = 0.8 + 0.4 * unit;
            let seconds = (base * 2f64.powi(exponent as i32) * factor)
                .min(cap)
                .max(0.0);
            Duration::try_from_secs_f64(seconds).unwrap_or(Duration::ZERO)
        }
    }
}

/// What `ork run retry` re-runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rerun {
    /// Tasks whose task runs go back to pending.
    pub tasks: BTreeSet<String>,
    /// Only their failed, cancelled and skipped task runs (a retry without
    /// `--task`); otherwise every task run of them.
    pub only_unsuccessful: bool,
    /// Dynamic fan-outs whose upstream re-runs: their items may change, so
    /// their instances are dropped and expanded again from scratch.
    pub expand_again: BTreeSet<String>,
}

/// Why a run cannot be retried; nothing changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RerunError {
    #[error("run {run} is still `{status}`; wait for it to end or cancel it first")]
    NotOver { run: String, status: RunStatus },
    #[error("run {run} succeeded; name a task with --task to re-run it and what follows it")]
    NothingFailed { run: String },
    #[error("workflow `{workflow}` has no task `{task}`; its tasks are: {known}")]
    UnknownTask {
        workflow: String,
        task: String,
        known: String,
    },
}

/// Decides what a retry of a finished run re-runs: `task` and everything
/// downstream of it, or (without `task`) every task with an unsuccessful
/// task run, listed in `unsuccessful`.
pub fn rerun(
    run: &str,
    status: RunStatus,
    workflow: &WorkflowDefinition,
    dag: &Dag,
    task: Option<&str>,
    unsuccessful: impl IntoIterator<Item = String>,
) -> Result<Rerun, RerunError> {
    if !status.is_terminal() {
        return Err(RerunError::NotOver {
            run: run.to_owned(),
            status,
        });
    }
    let (tasks, only_unsuccessful) = match task {
        Some(t) => {
            if workflow.task(t).is_none() {
                let known: Vec<&str> = workflow.tasks.iter().map(|t| t.name.as_str()).collect();
                return Err(RerunError::UnknownTask {
                    workflow: workflow.name.clone(),
                    task: t.to_owned(),
                    known: known.join(", "),
                });
            }
            let mut set = dag.downstream(t);
            set.insert(t.to_owned());
            (set, false)
        }
        None if status == RunStatus::Success => {
            return Err(RerunError::NothingFailed {
                run: run.to_owned(),
            });
        }
        None => (unsuccessful.into_iter().collect::<BTreeSet<_>>(), true),
    };
    let expand_again = tasks
        .iter()
        .filter(|name| {
            let dynamic = workflow.task(name).is_some_and(|t| {
                matches!(
                    t.parallel,
                    Some(Parallelism::CountRef(_) | Parallelism::ForEach(_))
                )
            });
            dynamic && dag.upstream(name).iter().any(|u| tasks.contains(u))
        })
        .cloned()
        .collect();
    Ok(Rerun {
        tasks,
        only_unsuccessful,
        expand_again,
    })
}

/// The first time strictly after `after` at which the workflow's schedule
/// fires, read in its time zone; `None` without a (valid) schedule. Daylight
/// saving time is handled as [`crate::schedule`] describes.
pub fn next_schedule_time(def: &WorkflowDefinition, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    crate::schedule::next_fire(def, after)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use expect_test::expect;
    use serde_json::json;

    use super::*;
    use crate::model::FieldRef;
    use crate::parse::{ParseOptions, parse_workflow};

    fn task(extra: &str) -> TaskDefinition {
        let yaml = format!("name: wf\ntasks:\n  - name: t\n    file: t.sh\n{extra}");
        parse_workflow(&yaml, &ParseOptions::default())
            .unwrap_or_else(|e| panic!("{e}"))
            .tasks
            .remove(0)
    }

    fn dep(task: &str, total: u32, succeeded: u32, unsuccessful: u32) -> DepSummary {
        DepSummary {
            task: task.into(),
            total,
            succeeded,
            unsuccessful,
        }
    }

    #[test]
    fn readiness_waits_then_runs_or_skips() {
        let skip = task("");
        let run = task("    on_failure: run\n");
        let waiting = |on: &[&str]| Readiness::Waiting {
            on: on.iter().map(|s| (*s).to_owned()).collect(),
        };
        let cases = [
            (&skip, vec![], Readiness::Ready),
            (&skip, vec![dep("a", 1, 1, 0), dep("b", 1, 0, 0)], waiting(&["b"])),
            // A fan-out waits until every instance is final, even after a failure.
            (&skip, vec![dep("a", 10, 3, 1), dep("b", 1, 0, 0)], waiting(&["a", "b"])),
            (&skip, vec![dep("a", 1, 1, 0), dep("b", 10, 10, 0)], Readiness::Ready),
            // A for_each over an empty list has no instances and counts as done.
            (&skip, vec![dep("a", 0, 0, 0)], Readiness::Ready),
            (&skip, vec![dep("extract", 1, 0, 1)], Readiness::Skip { reason: "upstream task `extract` did not succeed".into() }),
            (
                &skip,
                vec![dep("a", 10, 7, 3), dep("b", 1, 0, 1)],
                Readiness::Skip {
                    reason: "3 of 10 instances of upstream task `a` did not succeed; upstream task `b` did not succeed".into(),
                },
            ),
            (&run, vec![dep("a", 1, 0, 1)], Readiness::Ready),
            (&run, vec![dep("a", 2, 0, 1)], waiting(&["a"])),
        ];
        for (task, deps, expected) in cases {
            assert_eq!(readiness(task, &deps), expected, "{deps:?}");
        }
    }

    #[test]
    fn run_outcome_ranks_failure_over_cancellation() {
        let tally = |unfinished, success, failed, skipped, cancelled| RunTally {
            total: unfinished + success + failed + skipped + cancelled,
            unfinished,
            success,
            failed,
            skipped,
            cancelled,
        };
        let cases = [
            (tally(1, 5, 1, 0, 1), None),
            (tally(0, 5, 1, 0, 1), Some(RunStatus::Failed)),
            (tally(0, 5, 0, 2, 1), Some(RunStatus::Cancelled)),
            (tally(0, 5, 0, 2, 0), Some(RunStatus::Success)),
            (tally(0, 0, 0, 0, 0), Some(RunStatus::Success)),
        ];
        for (t, expected) in cases {
            assert_eq!(run_outcome(&t), expected, "{t:?}");
        }
    }

    fn field(task: &str, path: &[&str]) -> FieldRef {
        FieldRef {
            task: task.into(),
            path: path.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn fans_out_from_counts_and_lists() {
        let output = json!({"n": 3, "zero": 0, "files": ["a", "b"], "nested": {"items": [1]}});
        let count = Parallelism::CountRef(field("list", &["n"]));
        assert_eq!(fan_out(&count, &output, 10), Ok(FanOut::Count(3)));
        assert_eq!(
            fan_out(
                &Parallelism::CountRef(field("list", &["zero"])),
                &output,
                10
            ),
            Ok(FanOut::Count(0))
        );
        assert_eq!(
            fan_out(
                &Parallelism::ForEach(field("list", &["files"])),
                &output,
                10
            ),
            Ok(FanOut::Items(vec![json!("a"), json!("b")]))
        );
        assert_eq!(
            fan_out(
                &Parallelism::ForEach(field("list", &["nested", "items"])),
                &output,
                10
            ),
            Ok(FanOut::Items(vec![json!(1)]))
        );
        assert_eq!(
            fan_out(&Parallelism::Static(4), &Value::Null, 10),
            Ok(FanOut::Count(4))
        );
    }

    #[test]
    fn fan_out_errors_say_what_was_found() {
        let output = json!({"n": "3", "neg": -1, "big": 11, "files": {"a": 1}, "list": [1, 2, 3]});
        let err = |p: Parallelism| fan_out(&p, &output, 10).unwrap_err().to_string();
        let messages = [
            err(Parallelism::CountRef(field("list", &["count"]))),
            err(Parallelism::ForEach(field("list", &["files", "inner"]))),
            err(Parallelism::CountRef(field("list", &["n"]))),
            err(Parallelism::CountRef(field("list", &["neg"]))),
            err(Parallelism::CountRef(field("list", &["big"]))),
            err(Parallelism::ForEach(field("list", &["files"]))),
            err(Parallelism::ForEach(field("list", &["n"]))),
            err(Parallelism::Static(11)),
            fan_out(&Parallelism::ForEach(field("list", &["list"])), &output, 2)
                .unwrap_err()
                .to_string(),
            fan_out(
                &Parallelism::ForEach(field("list", &["x"])),
                &Value::Null,
                2,
            )
            .unwrap_err()
            .to_string(),
        ];
        expect![[r#"
            `list.count` is missing: the output of task `list` has no field `count`
            `list.files.inner` is missing: the output of task `list` has no field `files.inner`
            `list.n` must be a non-negative integer, found a string `"3"`
            `list.neg` must be a non-negative integer, found the number `-1`
            `list.big` asks for 11 instances, more than the limit of 10; split the work into fewer, larger items (the server's --max-fan-out)
            `list.files` must be an array, found an object `{"a":1}`
            `list.n` must be an array, found a string `"3"`
            `parallel: 11` asks for 11 instances, more than the limit of 10; split the work into fewer, larger items (the server's --max-fan-out)
            `list.list` asks for 3 instances, more than the limit of 2; split the work into fewer, larger items (the server's --max-fan-out)
            `list.x` is missing: the output of task `list` has no field `x`"#]].assert_eq(&messages.join("\n"));
    }

    #[test]
    fn fan_out_accepts_exactly_its_limit() {
        let output = json!({"list": [1, 2], "n": 2});
        let each = fan_out(&Parallelism::ForEach(field("list", &["list"])), &output, 2);
        assert_eq!(each, Ok(FanOut::Items(vec![json!(1), json!(2)])));
        let count = fan_out(&Parallelism::CountRef(field("list", &["n"])), &output, 2);
        assert_eq!(count, Ok(FanOut::Count(2)));
        assert!(fan_out(&Parallelism::CountRef(field("list", &["n"])), &output, 1).is_err());
    }

    #[test]
    fn retries_count_extra_attempts() {
        let t = task("    retries: 2\n");
        assert!(should_retry(&t, 1, false));
        assert!(should_retry(&t, 2, false));
        assert!(!should_retry(&t, 3, false));
        assert!(!should_retry(&t, 1, true));
        let none = task("");
        assert!(!should_retry(&none, 1, false));
        assert!(!should_retry(&none, 0, false));
    }

    #[test]
    fn fixed_delay_is_constant() {
        let t = task("    retries: 5\n    retry_delay_seconds: 7\n");
        for attempt in 1..5 {
            assert_eq!(retry_delay(&t, attempt, 0.9), Duration::from_secs(7));
        }
    }

    #[test]
    fn exponential_delay_doubles_with_jitter_and_cap() {
        let t = task(
            "    retries: 9\n    retry_delay_seconds: 10\n    retry_backoff: exponential\n    retry_max_delay_seconds: 100\n",
        );
        let secs = |attempt, jitter| retry_delay(&t, attempt, jitter).as_secs_f64();
        assert_eq!(secs(1, 0.5), 10.0);
        assert_eq!(secs(2, 0.5), 20.0);
        assert_eq!(secs(3, 0.5), 40.0);
        assert_eq!(secs(1, 0.0), 8.0);
        assert_eq!(secs(1, 1.0), 12.0);
        assert_eq!(secs(2, 0.0), 16.0);
        // Capped, jitter included, however many attempts.
        assert_eq!(secs(4, 1.0), 96.0);
        assert_eq!(secs(4, 0.0), 64.0);
        assert_eq!(secs(5, 0.0), 100.0);
        assert_eq!(secs(u32::MAX, 0.5), 100.0);
        // Out-of-range jitter is clamped, not trusted.
        assert_eq!(secs(1, 7.0), 12.0);
        assert_eq!(secs(1, f64::NAN), 10.0);
        let uncapped =
            task("    retries: 9\n    retry_delay_seconds: 1000\n    retry_backoff: exponential\n");
        assert_eq!(retry_delay(&uncapped, 3, 0.5), Duration::from_secs(3600));
    }

    #[test]
    fn rerun_picks_failed_tasks_or_a_task_and_its_downstream() {
        let yaml = "name: wf\ntasks:\n  - name: list\n    file: a.sh\n  - name: each\n    file: a.sh\n    depends_on: [list]\n    parallel: { for_each: list.items }\n  - name: join\n    file: a.sh\n    depends_on: [each]\n";
        let def = parse_workflow(yaml, &ParseOptions::default()).unwrap();
        let dag = Dag::new(&def).unwrap();
        let plan = rerun(
            "r",
            RunStatus::Failed,
            &def,
            &dag,
            None,
            ["join".to_owned()],
        )
        .unwrap();
        assert!(plan.only_unsuccessful);
        assert_eq!(plan.tasks, BTreeSet::from(["join".to_owned()]));
        assert!(plan.expand_again.is_empty());
        let plan = rerun("r", RunStatus::Success, &def, &dag, Some("list"), []).unwrap();
        assert!(!plan.only_unsuccessful);
        assert_eq!(plan.tasks.len(), 3);
        assert_eq!(plan.expand_again, BTreeSet::from(["each".to_owned()]));
        let plan = rerun("r", RunStatus::Failed, &def, &dag, Some("each"), []).unwrap();
        assert!(plan.expand_again.is_empty(), "its source keeps its output");
        let errors = [
            rerun("r", RunStatus::Running, &def, &dag, None, []),
            rerun("r", RunStatus::Success, &def, &dag, None, []),
            rerun("r", RunStatus::Failed, &def, &dag, Some("nope"), []),
        ]
        .map(|r| r.unwrap_err().to_string());
        expect![[r#"
            run r is still `running`; wait for it to end or cancel it first
            run r succeeded; name a task with --task to re-run it and what follows it
            workflow `wf` has no task `nope`; its tasks are: list, each, join"#]]
        .assert_eq(&errors.join("\n"));
    }

    #[test]
    fn next_schedule_time_reads_the_time_zone() {
        let yaml = "name: wf\nschedule: '30 2 * * 1'\ntimezone: Europe/Paris\ntasks: [{name: a, file: a.sh}]\n";
        let def = parse_workflow(yaml, &ParseOptions::default()).unwrap();
        // Thursday 2026-01-01 00:00 UTC; the next Monday 02:30 in Paris (UTC+1) is 01:30 UTC.
        let after = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(
            next_schedule_time(&def, after),
            Some(Utc.with_ymd_and_hms(2026, 1, 5, 1, 30, 0).unwrap())
        );
        let unscheduled = WorkflowDefinition {
            schedule: None,
            ..def
        };
        assert_eq!(next_schedule_time(&unscheduled, after), None);
    }
}
