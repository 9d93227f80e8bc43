//! Pure scheduling decisions: when a task is ready, when a run is over, how
//! many instances a fan-out gets, and whether and when to retry. The server
//! calls these inside its transactions; nothing here reads a clock.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

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
        self.total.saturating_sub(self.succeeded).saturating_sub(self.unsuccessful)
    }
}

/// Whether a pending task can start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Some dependencies still have unfinished instances.
    Waiting { on: Vec<String> },
    Ready,
    /// A dependency did not succeed and the task has `on_failure: skip`.
    Skip { reason: String },
}

/// Decides whether `task` can start, given the state of its dependencies.
pub fn readiness(task: &TaskDefinition, deps: &[DepSummary]) -> Readiness {
    let waiting: Vec<String> =
        deps.iter().filter(|d| d.unfinished() > 0).map(|d| d.task.clone()).collect();
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
            return Readiness::Skip { reason: reasons.join("; ") };
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
    MissingField { reference: String, task: String, key: String },
    #[error("`{reference}` must be {expected}, found {found}")]
    WrongType { reference: String, expected: &'static str, found: String },
    #[error(
        "`{reference}` asks for {count} instances, more than the limit of {max}; \
         split the work into fewer, larger items"
    )]
    TooMany { reference: String, count: u64, max: u32 },
}

/// Expands `parallel` given the output of the task it refers to (ignored for
/// a static count). `max` is the server's limit on instances per task.
pub fn fan_out(parallel: &Parallelism, upstream_output: &Value, max: u32) -> Result<FanOut, FanOutError> {
    let too_many = |reference: String, count: u64| FanOutError::TooMany { reference, count, max };
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
                value = value.get(key.as_str()).ok_or_else(|| FanOutError::MissingField {
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
            let cap = f64::from(task.retry_max_delay_seconds.unwrap_or(DEFAULT_RETRY_MAX_DELAY_SECONDS));
            let exponent = failed_attempt.max(1).saturating_sub(1).min(62);
            let unit = if jitter_unit.is_finite() { jitter_unit.clamp(0.0, 1.0) } else { 0.5 };
            let factor = 0.8 + 0.4 * unit;
            let seconds = (base * 2f64.powi(exponent as i32) * factor).min(cap).max(0.0);
            Duration::try_from_secs_f64(seconds).unwrap_or(Duration::ZERO)
        }
    }
}

/// The first time strictly after `after` at which the workflow's schedule
/// fires, read in its time zone; `None` without a (valid) schedule.
pub fn next_schedule_time(def: &WorkflowDefinition, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let schedule = crate::parse::cron_schedule(def.schedule.as_deref()?).ok()?;
    let tz: chrono_tz::Tz = def.timezone.parse().ok()?;
    schedule.after(&after.with_timezone(&tz)).next().map(|t| t.with_timezone(&Utc))
}
