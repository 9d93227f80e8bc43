//! Task metrics: named figures a task records for one attempt (`rows 1200`),
//! carried in the attempt's report and stored with the attempt. The rules on
//! names and values are checked here, once, for every way a report arrives.

use std::collections::BTreeMap;

/// A named figure a task recorded for one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskMetric {
    pub name: String,
    pub value: f64,
}

/// Most metrics one attempt may report.
pub const MAX_TASK_METRICS: usize = 64;
/// Longest metric name.
pub const MAX_TASK_METRIC_NAME: usize = 64;

impl TaskMetric {
    /// Checks a reported metric: a name of 1–64 letters, digits, `_`, `.` or
    /// `-` starting with a letter or `_`, and a finite value. The error says
    /// what is wrong with which name.
    pub fn check(&self) -> Result<(), String> {
        let name = &self.name;
        let mut chars = name.chars();
        let starts_well = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if !starts_well
            || name.len() > MAX_TASK_METRIC_NAME
            || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return Err(format!(
                "metric name {name:?}: use 1 to {MAX_TASK_METRIC_NAME} letters, digits, `_`, `.` or `-`, starting with a letter or `_`"
            ));
        }
        if !self.value.is_finite() {
            return Err(format!(
                "metric `{name}`: the value must be a finite number, got {}",
                self.value
            ));
        }
        Ok(())
    }
}

/// Checks a report's metrics and keeps the last value of each name, sorted
/// by name (what the store writes).
pub fn normalize_task_metrics(metrics: &[TaskMetric]) -> Result<Vec<TaskMetric>, String> {
    let mut by_name: BTreeMap<&str, f64> = BTreeMap::new();
    for m in metrics {
        m.check()?;
        by_name.insert(&m.name, m.value);
    }
    if by_name.len() > MAX_TASK_METRICS {
        return Err(format!(
            "{} distinct metrics reported; an attempt may record at most {MAX_TASK_METRICS}",
            by_name.len()
        ));
    }
    Ok(by_name
        .into_iter()
        .map(|(name, value)| TaskMetric {
            name: name.to_owned(),
            value,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, value: f64) -> TaskMetric {
        TaskMetric {
            name: name.to_owned(),
            value,
        }
    }

    #[test]
    fn the_last_value_of_a_name_wins_sorted_by_name() {
        let out = normalize_task_metrics(&[m("rows", 1.0), m("a.b-c_d", 2.0), m("rows", 3.0)])
            .expect("valid");
        assert_eq!(out, vec![m("a.b-c_d", 2.0), m("rows", 3.0)]);
    }

    #[test]
    fn bad_names_values_and_counts_are_refused_with_the_fix() {
        for bad in ["", "1rows", "rows count", "ünits", &"x".repeat(65)] {
            let err = normalize_task_metrics(&[m(bad, 1.0)]).expect_err(bad);
            assert!(err.contains("letters, digits"), "{err}");
        }
        for value in [f64::NAN, f64::INFINITY] {
            let err = normalize_task_metrics(&[m("rows", value)]).expect_err("not finite");
            assert!(err.contains("finite"), "{err}");
        }
        let many: Vec<TaskMetric> = (0..=MAX_TASK_METRICS)
            .map(|i| m(&format!("m{i}"), 1.0))
            .collect();
        let err = normalize_task_metrics(&many).expect_err("too many");
        assert!(err.contains("at most 64"), "{err}");
    }
}
