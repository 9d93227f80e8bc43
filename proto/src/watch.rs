//! Following a run through `WatchRun`: [`apply`] turns the stream's
//! messages (the whole run first, then only what changed) back into the
//! whole run, for every client that follows one.

use std::collections::{HashMap, HashSet};

use crate::v1::{Run, TaskRun, WatchRunResponse};

/// Applies one `WatchRun` message to the run followed so far (`None` before
/// the first message) and returns the run as it now is. Linear in the run's
/// size, however many task runs changed.
pub fn apply(current: Option<Run>, message: WatchRunResponse) -> Run {
    let mut update = message.run.unwrap_or_default();
    let current = match current {
        Some(run) if message.changes_only && run.id == update.id => run,
        _ => return update,
    };
    let mut changed: HashMap<String, TaskRun> = std::mem::take(&mut update.tasks)
        .into_iter()
        .map(|t| (t.id.clone(), t))
        .collect();
    // New task runs go after the last one of their task (a fan-out's
    // instances take its placeholder's place), or at the end.
    let mut added: HashMap<String, Vec<TaskRun>> = HashMap::new();
    let known: HashSet<&str> = current.tasks.iter().map(|t| t.id.as_str()).collect();
    let names: HashSet<&str> = current.tasks.iter().map(|t| t.name.as_str()).collect();
    let mut at_end = Vec::new();
    let mut new: Vec<TaskRun> = Vec::new();
    changed.retain(|id, task| {
        let known = known.contains(id.as_str());
        if !known {
            new.push(task.clone());
        }
        known
    });
    new.sort_by(|a, b| (a.parallel_index, &a.id).cmp(&(b.parallel_index, &b.id)));
    for task in new {
        match names.contains(task.name.as_str()) {
            true => added.entry(task.name.clone()).or_default().push(task),
            false => at_end.push(task),
        }
    }
    let mut last_of: HashMap<&str, usize> = HashMap::new();
    for (i, t) in current.tasks.iter().enumerate() {
        last_of.insert(t.name.as_str(), i);
    }
    let last_of: HashMap<String, usize> = last_of
        .into_iter()
        .map(|(name, i)| (name.to_owned(), i))
        .collect();
    let removed: HashSet<&str> = message
        .removed_task_ids
        .iter()
        .map(String::as_str)
        .collect();
    let mut tasks = Vec::with_capacity(current.tasks.len() + at_end.len());
    for (i, task) in current.tasks.into_iter().enumerate() {
        let name = task.name.clone();
        if !removed.contains(task.id.as_str()) {
            tasks.push(changed.remove(&task.id).unwrap_or(task));
        }
        if last_of.get(&name) == Some(&i)
            && let Some(new) = added.remove(&name)
        {
            tasks.extend(new);
        }
    }
    tasks.extend(at_end);
    Run { tasks, ..update }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, name: &str, status: &str) -> TaskRun {
        TaskRun {
            id: id.into(),
            name: name.into(),
            status: status.into(),
            ..TaskRun::default()
        }
    }

    fn run(status: &str, tasks: Vec<TaskRun>) -> Run {
        Run {
            id: "r1".into(),
            status: status.into(),
            tasks,
            ..Run::default()
        }
    }

    #[test]
    fn changes_are_merged_into_the_whole_run() {
        let first = WatchRunResponse {
            run: Some(run(
                "running",
                vec![
                    task("a", "a", "running"),
                    task("p", "fan", "pending"),
                    task("z", "z", "pending"),
                ],
            )),
            ..Default::default()
        };
        let state = apply(None, first);
        assert_eq!(state.tasks.len(), 3);
        // `a` succeeded; the fan-out's placeholder gave way to two instances.
        let delta = WatchRunResponse {
            run: Some(run(
                "running",
                vec![
                    task("a", "a", "success"),
                    task("f0", "fan", "running"),
                    task("f1", "fan", "pending"),
                ],
            )),
            changes_only: true,
            removed_task_ids: vec!["p".into()],
        };
        let state = apply(Some(state), delta);
        let seen: Vec<(&str, &str)> = state
            .tasks
            .iter()
            .map(|t| (t.id.as_str(), t.status.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("a", "success"),
                ("f0", "running"),
                ("f1", "pending"),
                ("z", "pending")
            ]
        );
        // A whole message replaces everything.
        let last = WatchRunResponse {
            run: Some(run("success", vec![task("a", "a", "success")])),
            ..Default::default()
        };
        let state = apply(Some(state), last);
        assert_eq!(state.status, "success");
        assert_eq!(state.tasks.len(), 1);
    }
}
