//! Bounds on what clients and workers send, applied where the data arrives:
//! run inputs, task outputs, log lines and the log volume of an attempt.
//! Each refusal names the limit and the server option that raises it.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::Value;

use crate::state::NewLogLine;

/// The size of `value` as compact JSON, counted without building the text.
pub fn json_size(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing into a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Why a run input is refused, if it is.
pub fn input_refusal(input: &Value, max: usize) -> Option<String> {
    let size = json_size(input);
    (size > max).then(|| {
        format!(
            "field `input`: the run input is {size} bytes as JSON, more than this server's limit of {max} (--max-input-bytes); keep large data in object storage and pass its location"
        )
    })
}

/// Why a task output is refused, if it is.
pub fn output_refusal(output: &Value, max: usize) -> Option<String> {
    let size = json_size(output);
    (size > max).then(|| {
        format!(
            "field `output`: the task's output is {size} bytes as JSON, more than this server's limit of {max} (--max-output-bytes); write large results to object storage and output their location"
        )
    })
}

/// The marker that ends a cut log line.
pub const LINE_CUT: &str = " [line truncated]";

/// Cuts a log line longer than `max` bytes (at a character boundary) and
/// marks the cut.
pub fn cut_line(line: &mut String, max: usize) {
    if line.len() <= max {
        return;
    }
    let mut cut = max;
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    line.truncate(cut);
    line.push_str(LINE_CUT);
}

/// Attempts tracked at most; past that the counts start over, which can
/// only let a few attempts store more than their budget, never less.
const MAX_TRACKED: usize = 100_000;

/// The log bytes each attempt stored, against the per-attempt budget.
///
/// Counts live in this process: a server restart starts them again, so an
/// attempt that spans restarts may store up to its budget once per process.
pub struct LogBudget {
    max: u64,
    used: Mutex<HashMap<(String, u32), u64>>,
}

impl LogBudget {
    pub fn new(max: u64) -> Self {
        Self {
            max,
            used: Mutex::new(HashMap::new()),
        }
    }

    /// The lines of `lines` that fit the attempt's budget. The first line
    /// that does not is replaced by one marker line; every later one is
    /// dropped.
    pub fn admit(
        &self,
        task_run_id: &str,
        attempt: u32,
        lines: Vec<NewLogLine>,
    ) -> Vec<NewLogLine> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if used.len() >= MAX_TRACKED && !used.contains_key(&(task_run_id.to_owned(), attempt)) {
            used.clear();
        }
        let spent = used.entry((task_run_id.to_owned(), attempt)).or_insert(0);
        let mut kept = Vec::with_capacity(lines.len());
        for line in lines {
            if *spent > self.max {
                break;
            }
            let size = u64::try_from(line.line.len()).unwrap_or(u64::MAX);
            if *spent + size <= self.max {
                *spent += size;
                kept.push(line);
            } else {
                // Past the budget: one marker, then nothing more.
                *spent = self.max + 1;
                kept.push(NewLogLine {
                    stream: "stderr".to_owned(),
                    line: format!(
                        "[ork] this attempt reached its log limit of {} bytes (--max-log-bytes-per-attempt); later lines are dropped",
                        self.max
                    ),
                    time: line.time,
                });
            }
        }
        kept
    }

    /// Forgets the attempts of a finished task run.
    pub fn forget(&self, task_run_id: &str) {
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(id, _), _| id != task_run_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(text: &str) -> NewLogLine {
        NewLogLine {
            stream: "stdout".to_owned(),
            line: text.to_owned(),
            time: chrono::Utc::now(),
        }
    }

    #[test]
    fn json_sizes_are_exact() {
        let value = json!({"a": [1, "é", null]});
        assert_eq!(
            json_size(&value),
            serde_json::to_vec(&value).expect("json").len()
        );
        assert!(input_refusal(&value, json_size(&value)).is_none());
        assert!(input_refusal(&value, json_size(&value) - 1).is_some());
        assert!(output_refusal(&value, json_size(&value)).is_none());
        assert!(output_refusal(&value, json_size(&value) - 1).is_some());
    }

    #[test]
    fn lines_are_cut_past_the_limit_at_a_character_boundary() {
        let mut at = "a".repeat(16);
        cut_line(&mut at, 16);
        assert_eq!(at, "a".repeat(16));
        let mut past = "a".repeat(17);
        cut_line(&mut past, 16);
        assert_eq!(past, format!("{}{LINE_CUT}", "a".repeat(16)));
        let mut wide = "éééé".to_owned(); // 8 bytes
        cut_line(&mut wide, 5);
        assert_eq!(wide, format!("éé{LINE_CUT}"));
    }

    #[test]
    fn an_attempt_stores_up_to_its_budget_then_one_marker() {
        let budget = LogBudget::new(10);
        let kept = budget.admit("t", 1, vec![line("12345"), line("12345")]);
        assert_eq!(kept.len(), 2, "exactly at the budget");
        let kept = budget.admit("t", 1, vec![line("x"), line("y")]);
        assert_eq!(kept.len(), 1);
        assert!(
            kept[0].line.contains("log limit of 10 bytes"),
            "{:?}",
            kept[0].line
        );
        assert!(
            budget.admit("t", 1, vec![line("z")]).is_empty(),
            "dropped after the marker"
        );
        assert_eq!(
            budget.admit("t", 2, vec![line("12345")]).len(),
            1,
            "per attempt"
        );
        budget.forget("t");
        assert_eq!(budget.admit("t", 1, vec![line("1")]).len(), 1);
    }
}
