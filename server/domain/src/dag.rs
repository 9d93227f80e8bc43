//! The task graph of a workflow: dependencies, dependents, transitive
//! upstream sets and a stable topological order.
//!
//! Edges are exactly the `depends_on` lists. Templates and `parallel`
//! references add no edges; validation requires them to name upstream tasks,
//! so that what a task reads is always visible in its `depends_on`.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::WorkflowDefinition;

/// Why a workflow's tasks do not form a DAG.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DagError {
    /// The tasks in execution order, first task repeated at the end.
    #[error("dependency cycle: {}; remove one of these depends_on entries", .path.join(" -> "))]
    Cycle { path: Vec<String> },
    #[error("task `{task}` depends on unknown task `{dependency}`")]
    UnknownDependency { task: String, dependency: String },
    #[error("task name `{0}` is used more than once")]
    DuplicateTask(String),
}

/// A validated, acyclic task graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dag {
    /// Task names in YAML order.
    names: Vec<String>,
    deps: Vec<Vec<String>>,
    succs: Vec<Vec<String>>,
    upstream: Vec<BTreeSet<String>>,
    index: BTreeMap<String, usize>,
    order: Vec<String>,
    roots: Vec<String>,
}

static EMPTY_SET: BTreeSet<String> = BTreeSet::new();

impl Dag {
    /// Builds the graph; fails on duplicate names, unknown dependencies and cycles.
    pub fn new(def: &WorkflowDefinition) -> Result<Dag, DagError> {
        let mut index = BTreeMap::new();
        for (i, task) in def.tasks.iter().enumerate() {
            if index.insert(task.name.clone(), i).is_some() {
                return Err(DagError::DuplicateTask(task.name.clone()));
            }
        }
        let n = def.tasks.len();
        let mut dep_idx: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut succ_idx: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, task) in def.tasks.iter().enumerate() {
            for dep in &task.depends_on {
                let d = *index.get(dep).ok_or_else(|| DagError::UnknownDependency {
                    task: task.name.clone(),
                    dependency: dep.clone(),
                })?;
                if !dep_idx[i].contains(&d) {
                    dep_idx[i].push(d);
                    succ_idx[d].push(i);
                }
            }
        }

        // Kahn's algorithm, always taking the earliest ready task in YAML order
        // so that the order is stable and reads like the file.
        let mut missing: Vec<usize> = dep_idx.iter().map(Vec::len).collect();
        let mut ready: BTreeSet<usize> = (0..n).filter(|&i| missing[i] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(i) = ready.pop_first() {
            order.push(i);
            for &s in &succ_idx[i] {
                missing[s] -= 1;
                if missing[s] == 0 {
                    ready.insert(s);
                }
            }
        }
        if order.len() < n {
            return Err(DagError::Cycle { path: find_cycle(def, &dep_idx, &missing) });
        }

        let mut upstream: Vec<BTreeSet<String>> = vec![BTreeSet::new(); n];
        for &i in &order {
            let mut set = BTreeSet::new();
            for &d in &dep_idx[i] {
                set.insert(def.tasks[d].name.clone());
                set.extend(upstream[d].iter().cloned());
            }
            upstream[i] = set;
        }

        let name = |i: &usize| def.tasks[*i].name.clone();
        Ok(Dag {
            names: def.tasks.iter().map(|t| t.name.clone()).collect(),
            roots: (0..n).filter(|&i| dep_idx[i].is_empty()).map(|i| name(&i)).collect(),
            order: order.iter().map(name).collect(),
            deps: dep_idx.iter().map(|v| v.iter().map(name).collect()).collect(),
            succs: succ_idx.iter().map(|v| v.iter().map(name).collect()).collect(),
            upstream,
            index,
        })
    }

    /// Tasks that list `task` in their depends_on (empty for unknown tasks).
    pub fn successors(&self, task: &str) -> &[String] {
        self.index.get(task).map_or(&[], |&i| &self.succs[i])
    }

    /// The tasks `task` lists in depends_on (empty for unknown tasks).
    pub fn dependencies(&self, task: &str) -> &[String] {
        self.index.get(task).map_or(&[], |&i| &self.deps[i])
    }

    /// Every task that must finish before `task` starts.
    pub fn upstream(&self, task: &str) -> &BTreeSet<String> {
        self.index.get(task).map_or(&EMPTY_SET, |&i| &self.upstream[i])
    }

    /// Every task that (transitively) waits for `task`.
    pub fn downstream(&self, task: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&str> = self.successors(task).iter().map(String::as_str).collect();
        while let Some(t) = stack.pop() {
            if seen.insert(t.to_owned()) {
                stack.extend(self.successors(t).iter().map(String::as_str));
            }
        }
        seen
    }

    /// All tasks, each after its dependencies; ties keep YAML order.
    pub fn topo_order(&self) -> &[String] {
        &self.order
    }

    /// Tasks without dependencies: the ones a new run starts with.
    pub fn roots(&self) -> &[String] {
        &self.roots
    }

    /// Tasks grouped by stage: a task's stage is one more than the latest
    /// stage of its dependencies. Tasks in one stage can run side by side.
    pub fn stages(&self) -> Vec<Vec<String>> {
        let mut stage_of: BTreeMap<&str, usize> = BTreeMap::new();
        let mut stages: Vec<Vec<String>> = Vec::new();
        for task in &self.order {
            let stage = self
                .dependencies(task)
                .iter()
                .filter_map(|d| stage_of.get(d.as_str()))
                .map(|s| s + 1)
                .max()
                .unwrap_or(0);
            stage_of.insert(task, stage);
            if stages.len() <= stage {
                stages.resize_with(stage + 1, Vec::new);
            }
            stages[stage].push(task.clone());
        }
        // Within a stage, list tasks in YAML order.
        for stage in &mut stages {
            stage.sort_by_key(|t| self.index.get(t).copied());
        }
        stages
    }

    /// Task names in YAML order.
    pub fn tasks(&self) -> &[String] {
        &self.names
    }
}

/// Finds one cycle among the tasks Kahn's algorithm could not order. Each of
/// them still waits on another of them, so following those waits must loop.
fn find_cycle(def: &WorkflowDefinition, deps: &[Vec<usize>], missing: &[usize]) -> Vec<String> {
    let stuck = |i: usize| missing[i] > 0;
    let Some(start) = (0..deps.len()).find(|&i| stuck(i)) else {
        return Vec::new();
    };
    let mut path = vec![start];
    let mut position = BTreeMap::from([(start, 0usize)]);
    let mut current = start;
    loop {
        let Some(&next) = deps[current].iter().find(|&&d| stuck(d)) else {
            return Vec::new();
        };
        if let Some(&at) = position.get(&next) {
            // `path` follows "depends on" edges; reverse it to read in the
            // order tasks would run, starting from the earliest in YAML order.
            let mut cycle: Vec<usize> = path[at..].to_vec();
            cycle.reverse();
            let first = cycle
                .iter()
                .enumerate()
                .min_by_key(|(_, i)| **i)
                .map_or(0, |(k, _)| k);
            cycle.rotate_left(first);
            let mut names: Vec<String> = cycle.iter().map(|&i| def.tasks[i].name.clone()).collect();
            if let Some(head) = names.first().cloned() {
                names.push(head);
            }
            return names;
        }
        position.insert(next, path.len());
        path.push(next);
        current = next;
    }
}
