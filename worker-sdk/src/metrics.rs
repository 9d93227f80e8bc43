//! Task metrics: named figures a task records for its attempt (rows
//! processed, bytes, a score), reported with its result.
//!
//! Pool handlers record through [`Recorder`] (`ctx.metrics.record("rows",
//! 1200.0)`); launched commands write `name value` lines to the file named by
//! `ORK_METRICS`, which the supervisor reads with [`parse_file`]. The server
//! checks them again; these checks only catch mistakes early.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What a report carries: value by name.
pub type TaskMetrics = HashMap<String, f64>;

/// Most metrics one attempt may record.
pub const MAX_METRICS: usize = 64;
/// Longest metric name.
pub const MAX_NAME: usize = 64;

/// Why a metric was refused.
pub fn check(name: &str, value: f64) -> Result<(), String> {
    let mut chars = name.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !starts_well
        || name.len() > MAX_NAME
        || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(format!(
            "metric name {name:?}: use 1 to {MAX_NAME} letters, digits, `_`, `.` or `-`, starting with a letter or `_`"
        ));
    }
    if !value.is_finite() {
        return Err(format!(
            "metric `{name}`: the value must be a finite number"
        ));
    }
    Ok(())
}

/// A handler's metrics: cheap to clone, safe to share between tasks.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    values: Arc<Mutex<TaskMetrics>>,
}

impl Recorder {
    /// Records `value` under `name`; recording a name again replaces its value.
    pub fn record(&self, name: &str, value: f64) -> Result<(), String> {
        check(name, value)?;
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        if !values.contains_key(name) && values.len() >= MAX_METRICS {
            return Err(format!(
                "metric `{name}`: an attempt records at most {MAX_METRICS} metrics"
            ));
        }
        values.insert(name.to_owned(), value);
        Ok(())
    }

    /// What was recorded so far.
    pub fn snapshot(&self) -> TaskMetrics {
        self.values
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Reads an `ORK_METRICS` file: one `name value` per line; blank lines and
/// `#` comments are skipped, a later line wins over an earlier one. Returns
/// the metrics and one warning per line that could not be used (the task is
/// not failed over a malformed figure).
pub fn parse_file(text: &str) -> (TaskMetrics, Vec<String>) {
    let mut metrics = TaskMetrics::new();
    let mut warnings = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(name), Some(value), None) = (parts.next(), parts.next(), parts.next()) else {
            warnings.push(format!(
                "ORK_METRICS line {}: expected `name value`, got {line:?}",
                n + 1
            ));
            continue;
        };
        let value = match value.parse::<f64>() {
            Ok(v) => v,
            Err(_) => {
                warnings.push(format!(
                    "ORK_METRICS line {}: {value:?} is not a number",
                    n + 1
                ));
                continue;
            }
        };
        if let Err(e) = check(name, value) {
            warnings.push(format!("ORK_METRICS line {}: {e}", n + 1));
            continue;
        }
        if !metrics.contains_key(name) && metrics.len() >= MAX_METRICS {
            warnings.push(format!(
                "ORK_METRICS line {}: more than {MAX_METRICS} metrics; `{name}` was dropped",
                n + 1
            ));
            continue;
        }
        metrics.insert(name.to_owned(), value);
    }
    (metrics, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metrics_file_is_read_line_by_line() {
        let (metrics, warnings) = parse_file(
            "rows 1200\n# a comment\n\nscore 0.93\nrows 1300\nbad line here\nx nan\n9x 1\n",
        );
        assert_eq!(metrics.len(), 2);
        assert_eq!(metrics["rows"], 1300.0);
        assert_eq!(metrics["score"], 0.93);
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings[0].contains("line 6"), "{warnings:?}");
    }

    #[test]
    fn the_recorder_checks_names_and_keeps_the_last_value() {
        let r = Recorder::default();
        r.record("rows", 1.0).expect("ok");
        r.record("rows", 2.0).expect("ok");
        assert!(r.record("has space", 1.0).is_err());
        assert!(r.record("inf", f64::INFINITY).is_err());
        assert_eq!(r.snapshot()["rows"], 2.0);
    }
}
