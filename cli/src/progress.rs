//! What `ork run start --wait` and `ork run status --watch` print while a
//! run goes on: one live status line on a terminal, and plain event lines
//! (a task started, failed, waits for a reason) otherwise. Pure functions of
//! the runs `WatchRun` streams, so they are snapshot-tested.

use std::collections::HashMap;

use ork_proto::v1::{Run, TaskRun};

use crate::output::{
    Color, Style, error_headline, format_duration, status_color, task_instance_name,
};

/// Frames of the spinner at the head of the live line.
const SPINNER: &[char] = &['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
/// Running task names listed on the live line before "and N more".
const NAMES_SHOWN: usize = 3;

/// Counts of a run's task instances by what they are doing.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub total: usize,
    pub done: usize,
    pub running: usize,
    pub failed: usize,
    /// Names of the running instances, in workflow order.
    pub running_names: Vec<String>,
    /// The first pending instance held back by something other than its
    /// dependencies, with the reason.
    pub waiting: Option<(String, String)>,
}

/// True for a pending reason worth showing: the task could run but for
/// something the user may want to know about (a missing worker, a full
/// queue, a retry delay), as opposed to upstream tasks not finished yet.
pub fn is_notable(reason: &str) -> bool {
    !reason.is_empty() && !reason.starts_with("waiting on ") && !reason.starts_with("queued:")
}

pub fn tally(run: &Run) -> Tally {
    let mut t = Tally {
        total: run.tasks.len(),
        ..Tally::default()
    };
    for task in &run.tasks {
        match task.status.as_str() {
            "success" | "skipped" => t.done += 1,
            "failed" | "cancelled" => t.failed += 1,
            "running" | "dispatched" => {
                t.running += 1;
                t.running_names.push(name(task));
            }
            _ => {
                if t.waiting.is_none() && is_notable(&task.pending_reason) {
                    t.waiting = Some((name(task), task.pending_reason.clone()));
                }
            }
        }
    }
    t
}

fn name(task: &TaskRun) -> String {
    task_instance_name(&task.name, task.parallel_index)
}

/// The live line: spinner, elapsed time, counts, running tasks and the
/// first notable wait, cut to `width` columns (a wrapped line could not be
/// redrawn in place).
pub fn status_line(run: &Run, elapsed_ms: i64, frame: usize, width: usize, style: Style) -> String {
    let t = tally(run);
    let mut parts: Vec<(String, Option<Color>)> = vec![
        (
            format!(
                "{} {} {}",
                SPINNER[frame % SPINNER.len()],
                run.workflow,
                format_duration(elapsed_ms)
            ),
            Some(Color::Cyan),
        ),
        (format!("{}/{} done", t.done, t.total), None),
    ];
    if t.running > 0 {
        let mut names = t.running_names[..t.running_names.len().min(NAMES_SHOWN)].join(", ");
        if t.running > NAMES_SHOWN {
            names.push_str(&format!(" +{}", t.running - NAMES_SHOWN));
        }
        parts.push((format!("{} running: {names}", t.running), None));
    }
    if t.failed > 0 {
        parts.push((format!("{} failed", t.failed), Some(Color::Red)));
    }
    if let Some((task, reason)) = &t.waiting {
        parts.push((format!("{task}: {reason}"), Some(Color::Yellow)));
    }
    // Cut by characters first, then paint, so escape codes never count.
    let mut out = String::new();
    let mut used = 0;
    for (i, (text, color)) in parts.iter().enumerate() {
        let sep = if i == 0 { "" } else { " · " };
        let room = width.saturating_sub(used + sep.chars().count());
        // A part cut to a few letters says nothing: leave it out.
        if room < text.chars().count().min(12) {
            break;
        }
        let shown: String = if text.chars().count() > room {
            let mut cut: String = text.chars().take(room - 1).collect();
            cut.push('…');
            cut
        } else {
            text.clone()
        };
        used += sep.chars().count() + shown.chars().count();
        out.push_str(sep);
        out.push_str(&style.paint(&shown, *color));
    }
    out
}

/// What a task looked like in the previous message, to tell what changed.
#[derive(Debug, Clone)]
struct Seen {
    status: String,
    attempt: u32,
    reason: String,
}

/// Remembers the previous message of a watch and turns the next one into
/// event lines.
#[derive(Debug, Default)]
pub struct Events {
    seen: HashMap<String, Seen>,
    run_status: Option<String>,
}

impl Events {
    /// The lines for what changed since the previous call, each stamped with
    /// `elapsed_ms`. `notable_only` keeps failures, retries and waits (what
    /// a live line cannot show for long) and drops starts and successes.
    pub fn update(
        &mut self,
        run: &Run,
        elapsed_ms: i64,
        notable_only: bool,
        style: Style,
    ) -> Vec<String> {
        let stamp = format!("[{:>6}]", format_duration(elapsed_ms));
        let mut lines = Vec::new();
        let mut push = |text: String, color: Option<Color>| {
            lines.push(format!(
                "{} {}",
                style.paint(&stamp, Some(Color::Dim)),
                style.paint(&text, color)
            ));
        };
        if self.run_status.is_none() {
            push(
                format!(
                    "run {} of {}: {} tasks",
                    run.id,
                    run.workflow,
                    run.tasks.len()
                ),
                None,
            );
        }
        for task in &run.tasks {
            let before = self.seen.get(&task.id);
            let changed_status = before.is_none_or(|b| b.status != task.status);
            let label = name(task);
            match task.status.as_str() {
                "running" if changed_status && !notable_only => {
                    let attempt = if task.attempt > 1 {
                        format!(" (attempt {})", task.attempt)
                    } else {
                        String::new()
                    };
                    push(format!("{label} running{attempt}"), None);
                }
                "success" if changed_status && !notable_only => {
                    push(format!("{label} succeeded"), status_color("success"));
                }
                "failed" if changed_status => {
                    push(
                        format!("{label} failed: {}", error_headline(&task.error)),
                        status_color("failed"),
                    );
                }
                "skipped" | "cancelled" if changed_status => {
                    let why = if task.error.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", error_headline(&task.error))
                    };
                    push(
                        format!("{label} {}{why}", task.status),
                        status_color(&task.status),
                    );
                }
                "pending" => {
                    let retried = before.is_some_and(|b| {
                        matches!(b.status.as_str(), "running" | "dispatched") && b.attempt > 0
                    });
                    if retried && !task.error.is_empty() {
                        push(
                            format!(
                                "{label} attempt {} failed, will retry: {}",
                                task.attempt,
                                error_headline(&task.error)
                            ),
                            Some(Color::Yellow),
                        );
                    }
                    let new_reason = before.is_none_or(|b| b.reason != task.pending_reason);
                    if new_reason && is_notable(&task.pending_reason) {
                        push(
                            format!("{label} waits: {}", task.pending_reason),
                            Some(Color::Yellow),
                        );
                    }
                }
                _ => {}
            }
            self.seen.insert(
                task.id.clone(),
                Seen {
                    status: task.status.clone(),
                    attempt: task.attempt,
                    reason: task.pending_reason.clone(),
                },
            );
        }
        let ended = matches!(run.status.as_str(), "success" | "failed" | "cancelled");
        if ended && self.run_status.as_deref() != Some(run.status.as_str()) {
            push(format!("run {}", run.status), status_color(&run.status));
        }
        self.run_status = Some(run.status.clone());
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, name: &str, status: &str) -> TaskRun {
        TaskRun {
            id: id.into(),
            name: name.into(),
            status: status.into(),
            ..Default::default()
        }
    }

    fn run(status: &str, tasks: Vec<TaskRun>) -> Run {
        Run {
            id: "r1".into(),
            workflow: "etl".into(),
            status: status.into(),
            tasks,
            ..Default::default()
        }
    }

    #[test]
    fn the_live_line_counts_names_and_says_why_a_task_waits() {
        let mut report = task("t4", "report", "pending");
        report.pending_reason =
            "no attached worker serves handler `build_report` (no pool worker is attached)".into();
        let mut p1 = task("t2", "process", "running");
        p1.parallel_index = Some(1);
        let mut p0 = task("t1", "process", "success");
        p0.parallel_index = Some(0);
        let r = run(
            "running",
            vec![task("t0", "discover", "success"), p0, p1, report],
        );
        assert_eq!(
            status_line(&r, 3_200, 2, 200, Style::PLAIN),
            "⠹ etl 3.2s · 2/4 done · 1 running: process[1] · report: no attached worker serves handler `build_report` (no pool worker is attached)"
        );
        let cut = status_line(&r, 3_200, 0, 50, Style::PLAIN);
        assert_eq!(cut, "⠋ etl 3.2s · 2/4 done · 1 running: process[1]");
        assert!(cut.chars().count() <= 50);
        let cut = status_line(&r, 3_200, 0, 70, Style::PLAIN);
        assert_eq!(
            cut,
            "⠋ etl 3.2s · 2/4 done · 1 running: process[1] · report: no attached w…"
        );
        assert_eq!(cut.chars().count(), 70);
    }

    #[test]
    fn events_tell_starts_failures_retries_and_waits_once() {
        let mut events = Events::default();
        let mut a = task("a", "extract", "pending");
        a.pending_reason = "queued: waiting for dispatch".into();
        let mut b = task("b", "load", "pending");
        b.pending_reason = "waiting on extract".into();
        let first = events.update(
            &run("running", vec![a.clone(), b.clone()]),
            0,
            false,
            Style::PLAIN,
        );
        assert_eq!(first, ["[   0ms] run r1 of etl: 2 tasks"]);

        a.status = "running".into();
        a.attempt = 1;
        a.pending_reason.clear();
        let lines = events.update(
            &run("running", vec![a.clone(), b.clone()]),
            12,
            false,
            Style::PLAIN,
        );
        assert_eq!(lines, ["[  12ms] extract running"]);

        a.status = "pending".into();
        a.error = "ValueError: flaky\n\nTraceback ...".into();
        a.pending_reason = "retry delay: attempt 2 starts at 10:00:01.000 UTC".into();
        let lines = events.update(
            &run("running", vec![a.clone(), b.clone()]),
            40,
            false,
            Style::PLAIN,
        );
        assert_eq!(
            lines,
            [
                "[  40ms] extract attempt 1 failed, will retry: ValueError: flaky",
                "[  40ms] extract waits: retry delay: attempt 2 starts at 10:00:01.000 UTC",
            ]
        );
        // The same message again says nothing new.
        assert!(
            events
                .update(
                    &run("running", vec![a.clone(), b.clone()]),
                    50,
                    false,
                    Style::PLAIN
                )
                .is_empty()
        );

        a.status = "failed".into();
        a.attempt = 2;
        a.error =
            "exited with code 1: Traceback (most recent call last):\n  File \"x\"\nKeyError: 'x'"
                .into();
        b.status = "skipped".into();
        b.error = "upstream task `extract` failed".into();
        let lines = events.update(&run("failed", vec![a, b]), 1_500, true, Style::PLAIN);
        assert_eq!(
            lines,
            [
                "[  1.5s] extract failed: exited with code 1: KeyError: 'x'",
                "[  1.5s] load skipped: upstream task `extract` failed",
                "[  1.5s] run failed",
            ]
        );
    }
}
