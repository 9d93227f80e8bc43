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
            return Err(DagError::Cycle {
                path: find_cycle(def, &dep_idx, &missing),
            });
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
            roots: (0..n)
                .filter(|&i| dep_idx[i].is_empty())
                .map(|i| name(&i))
                .collect(),
            order: order.iter().map(name).collect(),
            deps: dep_idx
                .iter()
                .map(|v| v.iter().map(name).collect())
                .collect(),
            succs: succ_idx
                .iter()
                .map(|v| v.iter().map(name).collect())
                .collect(),
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
        self.index
            .get(task)
            .map_or(&EMPTY_SET, |&i| &self.upstream[i])
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

#[cfg(test)]
mod tests {
    use std::fmt::Write;

    use expect_test::expect;

    use super::*;
    use crate::model::TaskDefinition;
    use crate::parse::{ParseOptions, parse_workflow};

    /// A workflow whose tasks each depend on the listed ones.
    fn workflow(tasks: &[(&str, &[&str])]) -> WorkflowDefinition {
        let mut yaml = String::from("name: wf\ntasks:\n");
        for (name, deps) in tasks {
            let _ = writeln!(
                yaml,
                "  - {{name: {name}, file: x.sh, depends_on: [{}]}}",
                deps.join(", ")
            );
        }
        let mut def =
            parse_workflow(&yaml, &ParseOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        // Keep only the names: Dag::new must be tested on graphs parse would refuse too.
        def.tasks.iter_mut().for_each(|t| t.file = None);
        def
    }

    fn raw(tasks: &[(&str, &[&str])]) -> WorkflowDefinition {
        let mut def = workflow(&[("placeholder", &[])]);
        let template = def.tasks[0].clone();
        def.tasks = tasks
            .iter()
            .map(|(name, deps)| TaskDefinition {
                name: (*name).to_owned(),
                depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
                ..template.clone()
            })
            .collect();
        def
    }

    fn plan(dag: &Dag) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "order: {}", dag.topo_order().join(" "));
        let _ = writeln!(out, "roots: {}", dag.roots().join(" "));
        for (i, stage) in dag.stages().iter().enumerate() {
            let _ = writeln!(out, "stage {i}: {}", stage.join(" "));
        }
        for task in dag.tasks() {
            let join = |v: Vec<&str>| v.join(",");
            let _ = writeln!(
                out,
                "{task}: deps [{}] succs [{}] upstream [{}] downstream [{}]",
                join(dag.dependencies(task).iter().map(String::as_str).collect()),
                join(dag.successors(task).iter().map(String::as_str).collect()),
                join(dag.upstream(task).iter().map(String::as_str).collect()),
                join(dag.downstream(task).iter().map(String::as_str).collect()),
            );
        }
        out
    }

    #[test]
    fn plans_a_diamond_with_a_side_branch() {
        let def = workflow(&[
            ("report", &["load", "audit"]),
            ("extract", &[]),
            ("clean", &["extract"]),
            ("enrich", &["extract"]),
            ("load", &["clean", "enrich"]),
            ("audit", &[]),
        ]);
        let dag = Dag::new(&def).unwrap();
        expect![[r#"
            order: extract clean enrich load audit report
            roots: extract audit
            stage 0: extract audit
            stage 1: clean enrich
            stage 2: load
            stage 3: report
            report: deps [load,audit] succs [] upstream [audit,clean,enrich,extract,load] downstream []
            extract: deps [] succs [clean,enrich] upstream [] downstream [clean,enrich,load,report]
            clean: deps [extract] succs [load] upstream [extract] downstream [load,report]
            enrich: deps [extract] succs [load] upstream [extract] downstream [load,report]
            load: deps [clean,enrich] succs [report] upstream [clean,enrich,extract] downstream [report]
            audit: deps [] succs [report] upstream [] downstream [report]
        "#]].assert_eq(&plan(&dag));
    }

    #[test]
    fn unknown_tasks_have_no_edges() {
        let dag = Dag::new(&workflow(&[("a", &[])])).unwrap();
        assert!(dag.successors("zz").is_empty());
        assert!(dag.dependencies("zz").is_empty());
        assert!(dag.upstream("zz").is_empty());
        assert!(dag.downstream("zz").is_empty());
    }

    #[test]
    fn reports_cycles_in_run_order() {
        let err = Dag::new(&raw(&[
            ("a", &[]),
            ("b", &["a", "d"]),
            ("c", &["b"]),
            ("d", &["c"]),
        ]))
        .unwrap_err();
        assert_eq!(
            err,
            DagError::Cycle {
                path: vec!["b".into(), "c".into(), "d".into(), "b".into()]
            }
        );
        expect!["dependency cycle: b -> c -> d -> b; remove one of these depends_on entries"]
            .assert_eq(&err.to_string());
        let err = Dag::new(&raw(&[("a", &["a"])])).unwrap_err();
        assert_eq!(
            err,
            DagError::Cycle {
                path: vec!["a".into(), "a".into()]
            }
        );
    }

    #[test]
    fn rejects_unknown_and_duplicate_tasks() {
        assert_eq!(
            Dag::new(&raw(&[("a", &["b"])])).unwrap_err(),
            DagError::UnknownDependency {
                task: "a".into(),
                dependency: "b".into()
            }
        );
        assert_eq!(
            Dag::new(&raw(&[("a", &[]), ("a", &[])])).unwrap_err(),
            DagError::DuplicateTask("a".into())
        );
    }

    #[test]
    fn long_chains_need_no_recursion() {
        let names: Vec<String> = (0..1000).map(|i| format!("t{i}")).collect();
        let deps: Vec<Vec<&str>> = (0..1000)
            .map(|i| {
                if i == 0 {
                    vec![]
                } else {
                    vec![names[i - 1].as_str()]
                }
            })
            .collect();
        let spec: Vec<(&str, &[&str])> = names
            .iter()
            .zip(&deps)
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        let dag = Dag::new(&raw(&spec)).unwrap();
        assert_eq!(dag.upstream("t999").len(), 999);
        assert_eq!(dag.downstream("t0").len(), 999);
        assert_eq!(dag.stages().len(), 1000);
        // Close the chain into a ring: the cycle holds every task.
        let mut ring = spec.clone();
        ring[0] = ("t0", &["t999"]);
        match Dag::new(&raw(&ring)).unwrap_err() {
            DagError::Cycle { path } => assert_eq!(path.len(), 1001),
            other => panic!("{other}"),
        }
    }
}
