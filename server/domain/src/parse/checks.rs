//! Checks that span tasks: unique names, dependencies, cycles, what templates
//! and `parallel` read, output types and referenced files.

use std::collections::BTreeMap;

use super::task::TaskDraft;
use super::{Errors, Kind, Node, ParseOptions, Pos};
use crate::dag::{Dag, DagError};
use crate::model::{FieldRef, Parallelism, WorkflowDefinition};
use crate::suggest;
use crate::template::{self, TemplateRef};
use crate::types::{self, FieldLookup};

pub(crate) fn check_tasks(
    drafts: &[TaskDraft<'_>],
    def: &WorkflowDefinition,
    opts: &ParseOptions<'_>,
    errors: &mut Errors<'_>,
) {
    // Unique names; the first task with a name keeps it.
    let mut by_name: BTreeMap<&str, &TaskDraft<'_>> = BTreeMap::new();
    let mut duplicates = false;
    for draft in drafts.iter().filter(|d| d.has_name) {
        let name = draft.def.name.as_str();
        if let Some(first) = by_name.get(name) {
            duplicates = true;
            let first_line = first
                .name_pos
                .line()
                .map(|l| format!(" (first used on line {l})"))
                .unwrap_or_default();
            errors.push(
                Some(name),
                Some("name"),
                draft.name_pos,
                format!("duplicate task name `{name}`{first_line}; task names must be unique"),
            );
        } else {
            by_name.insert(name, draft);
        }
    }
    let names = || by_name.keys().copied();

    // depends_on entries must name other, existing tasks. The DAG is built
    // from the valid entries only, so that one typo does not hide a cycle.
    let mut graph = WorkflowDefinition {
        tasks: Vec::new(),
        ..def.clone()
    };
    for draft in drafts.iter().filter(|d| d.has_name) {
        let task = draft.def.name.as_str();
        let mut kept = Vec::new();
        for (dep, pos) in draft.def.depends_on.iter().zip(&draft.depends_pos) {
            if dep == task {
                errors.push(
                    Some(task),
                    Some("depends_on"),
                    *pos,
                    "a task cannot depend on itself; remove it",
                );
            } else if !by_name.contains_key(dep.as_str()) {
                let message = format!("unknown task `{dep}`{}", did_you_mean(dep, names()));
                errors.push(Some(task), Some("depends_on"), *pos, message);
            } else {
                kept.push(dep.clone());
            }
        }
        let mut def = draft.def.clone();
        def.depends_on = kept;
        graph.tasks.push(def);
    }
    let dag = if duplicates {
        None
    } else {
        match Dag::new(&graph) {
            Ok(dag) => Some(dag),
            Err(DagError::Cycle { path }) => {
                let first = path.first().map(String::as_str).unwrap_or_default();
                let second_last = path.len().checked_sub(2).and_then(|i| path.get(i));
                // Point at the entry of the first task that closes the cycle.
                let pos = by_name
                    .get(first)
                    .and_then(|d| {
                        d.def
                            .depends_on
                            .iter()
                            .zip(&d.depends_pos)
                            .find(|(dep, _)| Some(*dep) == second_last)
                    })
                    .map(|(_, pos)| *pos)
                    .unwrap_or_default();
                errors.push(
                    Some(first),
                    Some("depends_on"),
                    pos,
                    format!(
                        "dependency cycle: {}; remove one of these dependencies",
                        path.join(" -> ")
                    ),
                );
                None
            }
            Err(other) => {
                // Unreachable after the checks above; report rather than panic.
                errors.push(None, Some("depends_on"), Pos::default(), other.to_string());
                None
            }
        }
    };

    for draft in drafts.iter().filter(|d| d.has_name) {
        let task = draft.def.name.as_str();
        let upstream_hint = |other: &str| -> Option<String> {
            let dag = dag.as_ref()?;
            (!dag.upstream(task).contains(other)).then(|| {
                format!(
                    "task `{other}`, which is not upstream of `{task}`; add `{other}` to depends_on"
                )
            })
        };

        // Templates in the input, checked string by string for exact positions.
        if let Some(input) = draft.input {
            for_each_string(input, &mut |text, pos| {
                let templates = match template::parse_templates(text) {
                    Ok(t) => t,
                    Err(e) => {
                        errors.push(Some(task), Some("input"), pos, e.to_string());
                        return;
                    }
                };
                for t in templates {
                    let problem = match &t.reference {
                        TemplateRef::Output { task: other, .. } | TemplateRef::Outputs { task: other, .. } => {
                            let wants_many = matches!(t.reference, TemplateRef::Outputs { .. });
                            match by_name.get(other.as_str()) {
                                None => Some(format!(
                                    "template `{}` reads unknown task `{other}`{}",
                                    t.text,
                                    did_you_mean(other, names())
                                )),
                                Some(_) if other == task => {
                                    Some(format!("template `{}` reads the task's own output; a task can only read upstream outputs", t.text))
                                }
                                Some(o) => upstream_hint(other)
                                    .map(|hint| format!("template `{}` reads {hint}", t.text))
                                    .or_else(|| match (o.def.is_fanned_out(), wants_many) {
                                        (true, false) => Some(format!(
                                            "template `{}` reads one output, but task `{other}` runs several instances (it has `parallel`); use `tasks.{other}.outputs` for the list of their outputs",
                                            t.text
                                        )),
                                        (false, true) => Some(format!(
                                            "template `{}` reads a list of outputs, but task `{other}` runs once; use `tasks.{other}.output`",
                                            t.text
                                        )),
                                        _ => None,
                                    }),
                            }
                        }
                        TemplateRef::Item(_) => (!matches!(draft.def.parallel, Some(Parallelism::ForEach(_))))
                            .then(|| format!("template `{}` reads `item`, which only tasks with `parallel: {{for_each: ...}}` have", t.text)),
                        TemplateRef::ParallelIndex | TemplateRef::ParallelCount => draft
                            .def
                            .parallel
                            .is_none()
                            .then(|| format!("template `{}` reads `parallel`, which only tasks with `parallel` set have", t.text)),
                        TemplateRef::RunInput(path) => run_input_problem(&t.text, path, def),
                    };
                    if let Some(message) = problem {
                        errors.push(Some(task), Some("input"), pos, message);
                    }
                }
            });
        }

        // A dynamic fan-out reads an upstream task that runs once.
        if let Some(r) = draft.def.parallel.as_ref().and_then(|p| match p {
            Parallelism::CountRef(r) | Parallelism::ForEach(r) => Some(r),
            Parallelism::Static(_) => None,
        }) {
            let other = r.task.as_str();
            let problem = match by_name.get(other) {
                None => Some(format!("`{r}` reads unknown task `{other}`{}", did_you_mean(other, names()))),
                Some(_) if other == task => Some(format!("`{r}` reads the task's own output; fan out from an upstream task")),
                Some(o) => upstream_hint(other).map(|hint| format!("`{r}` reads {hint}")).or_else(|| {
                    o.def.is_fanned_out().then(|| {
                        format!("`{r}` reads task `{other}`, which runs several instances; fan out from a task that runs once")
                    })
                }),
            };
            let problem = problem.or_else(|| {
                let upstream = by_name.get(other)?;
                let type_name = upstream.def.output_type.as_deref()?;
                parallel_type_problem(r, draft.def.parallel.as_ref()?, type_name, def)
            });
            if let Some(message) = problem {
                errors.push(Some(task), Some("parallel"), draft.parallel_pos, message);
            }
        }

        if let Some(output_type) = &draft.def.output_type
            && !def.types.contains_key(output_type)
        {
            let message = if def.types.is_empty() {
                format!(
                    "unknown type `{output_type}`; declare it under `types` at the top of the workflow"
                )
            } else {
                format!(
                    "unknown type `{output_type}`{}; declared types: {}",
                    did_you_mean(output_type, def.types.keys().map(String::as_str)),
                    def.types.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            };
            errors.push(
                Some(task),
                Some("output_type"),
                draft.output_type_pos,
                message,
            );
        }

        if let Some(files) = opts.files {
            for (field, path, pos) in [
                ("file", &draft.def.file, draft.file_pos),
                ("config_file", &draft.def.config_file, draft.config_file_pos),
            ] {
                if let Some(path) = path
                    && !files.contains(path)
                {
                    errors.push(
                        Some(task),
                        Some(field),
                        pos,
                        format!(
                            "file `{path}` was not found; paths are relative to the workflow file"
                        ),
                    );
                }
            }
        }
    }
}

/// What the upstream task's `output_type` says against a dynamic fan-out:
/// `for_each` needs an array field and `count` an integer field. Only what
/// the type states is held against it: a field of an open object, or one
/// without a declared `type`, passes (and is checked when the output comes).
fn parallel_type_problem(
    r: &FieldRef,
    parallel: &Parallelism,
    type_name: &str,
    def: &WorkflowDefinition,
) -> Option<String> {
    let (key, needs, wanted) = match parallel {
        Parallelism::ForEach(_) => ("for_each", "an array", "array"),
        Parallelism::CountRef(_) => ("count", "an integer", "integer"),
        Parallelism::Static(_) => return None,
    };
    let other = &r.task;
    let whose = format!("type `{type_name}` (the `output_type` of task `{other}`)");
    match types::field_lookup(&def.types, type_name, &r.path) {
        FieldLookup::Unknown => None,
        FieldLookup::Found(schema) => {
            let declared = types::declared_types(schema)?;
            (!declared.contains(&wanted)).then(|| {
                format!(
                    "`{r}` is declared as {} by {whose}; `{key}` needs {needs} field",
                    declared.join(" or ")
                )
            })
        }
        FieldLookup::Missing {
            at,
            key: field,
            allowed,
        } => {
            let hint = match suggest::closest(&field, allowed.iter().map(String::as_str)) {
                Some(close) => format!(" (did you mean `{close}`?)"),
                None if allowed.is_empty() => String::new(),
                None => format!("; it declares {}", allowed.join(", ")),
            };
            Some(format!(
                "`{other}.{at}` is not a field of {whose}, which has \
                 `additionalProperties: false`{hint}"
            ))
        }
        FieldLookup::NotObject { at, declared } => {
            let at = if at.is_empty() {
                format!("the output of task `{other}`")
            } else {
                format!("`{other}.{at}`")
            };
            Some(format!(
                "`{r}` reads a field of {at}, which {whose} declares as {declared}, not an object"
            ))
        }
    }
}

/// What `inputs:` says against a template reading `run.input.FIELD`: the
/// field must be declared (or be `scheduled_for`, which schedules set).
fn run_input_problem(template: &str, path: &[String], def: &WorkflowDefinition) -> Option<String> {
    let declared = def.inputs.as_ref()?;
    let field = path.first()?;
    if field == crate::inputs::SCHEDULED_FOR || declared.iter().any(|d| &d.name == field) {
        return None;
    }
    let names = declared.iter().map(|d| d.name.as_str());
    Some(format!(
        "template `{template}` reads run input `{field}`, which `inputs` does not declare{}; declare it under `inputs`",
        did_you_mean(field, names)
    ))
}

fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    suggest::closest(word, candidates)
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

/// Calls `f` with every string value (not key) below `node` and its position.
fn for_each_string(node: &Node, f: &mut dyn FnMut(&str, Pos)) {
    match &node.kind {
        Kind::Str(s) => f(s, node.pos),
        Kind::Seq(items) => items.iter().for_each(|n| for_each_string(n, f)),
        Kind::Map(entries) => entries.iter().for_each(|(_, v)| for_each_string(v, f)),
        _ => {}
    }
}
