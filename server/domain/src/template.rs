//! `{{ ... }}` templates in task inputs: finding them, checking them, and
//! replacing them with run input, upstream outputs and fan-out values.
//!
//! A string that is exactly one template becomes the referenced JSON value
//! (of any type); templates inside longer strings are interpolated as text.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// What the outputs of one upstream task look like to a template.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskOutputs {
    /// The output of a task that ran once (`Null` when it did not succeed).
    Single(Value),
    /// The outputs of every instance of a fanned-out task, in index order.
    Many(Vec<Value>),
}

/// Everything a task's templates may read.
#[derive(Debug, Clone, Copy)]
pub struct ResolveContext<'a> {
    pub run_input: &'a Value,
    /// Upstream outputs by task name.
    pub outputs: &'a BTreeMap<String, TaskOutputs>,
    /// The element of a `for_each` instance.
    pub item: Option<&'a Value>,
    pub parallel_index: Option<u32>,
    pub parallel_count: Option<u32>,
}

/// What one template reads. Paths are object keys, or array indexes when the
/// segment is a number (`files.0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateRef {
    /// `run.input[.path]`.
    RunInput(Vec<String>),
    /// `tasks.T.output[.path]`.
    Output { task: String, path: Vec<String> },
    /// `tasks.T.outputs[.path]`: the list of all instances' outputs.
    Outputs { task: String, path: Vec<String> },
    /// `item[.path]`.
    Item(Vec<String>),
    /// `parallel.index`.
    ParallelIndex,
    /// `parallel.count`.
    ParallelCount,
}

/// One `{{ ... }}` occurrence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The template as written, braces included, for error messages.
    pub text: String,
    pub reference: TemplateRef,
}

impl TemplateRef {
    /// The upstream task this template reads, if any.
    pub fn task(&self) -> Option<&str> {
        match self {
            TemplateRef::Output { task, .. } | TemplateRef::Outputs { task, .. } => Some(task),
            _ => None,
        }
    }
}

/// Why a template could not be parsed or resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unterminated `{{{{` in `{text}`; close the template with `}}}}`")]
    Unterminated { text: String },
    #[error("invalid template `{template}`: {reason}")]
    Invalid { template: String, reason: String },
    #[error(
        "unknown name `{root}` in template `{template}`; templates start with `run.input`, \
         `tasks.<task>.output`, `tasks.<task>.outputs`, `item` or `parallel`"
    )]
    UnknownRoot { template: String, root: String },
    #[error("run input has no field `{key}` (read by template `{template}`); pass it when starting the run")]
    MissingRunInput { template: String, key: String },
    #[error("output of task `{task}` has no field `{key}` (read by template `{template}`)")]
    MissingOutput { template: String, task: String, key: String },
    #[error("no output of task `{task}` is available to template `{template}`; add `{task}` to depends_on")]
    NoOutput { template: String, task: String },
    #[error("task `{task}` ran several instances, so template `{template}` must use `tasks.{task}.outputs`")]
    UseOutputs { template: String, task: String },
    #[error("task `{task}` ran once, so template `{template}` must use `tasks.{task}.output`")]
    UseOutput { template: String, task: String },
    #[error("the item has no field `{key}` (read by template `{template}`)")]
    MissingItemField { template: String, key: String },
    #[error("template `{template}` reads `item`, which only tasks with `parallel: {{for_each: ...}}` have")]
    NoItem { template: String },
    #[error("template `{template}` reads `parallel`, which only tasks with `parallel` set have")]
    NoParallel { template: String },
}

enum Piece<'a> {
    Text(&'a str),
    Template(Template),
}

/// Every template in `text`, in order.
pub fn parse_templates(text: &str) -> Result<Vec<Template>, TemplateError> {
    Ok(split(text)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Template(t) => Some(t),
            Piece::Text(_) => None,
        })
        .collect())
}

/// Every template in the strings of `input` (object keys are not templated).
pub fn templates_in_value(input: &Value) -> Result<Vec<Template>, TemplateError> {
    let mut found = Vec::new();
    visit_strings(input, &mut |s| {
        found.extend(parse_templates(s)?);
        Ok(())
    })?;
    Ok(found)
}

/// The names of the tasks whose outputs the templates in `input` read.
pub fn task_refs(input: &Value) -> Result<BTreeSet<String>, TemplateError> {
    Ok(templates_in_value(input)?
        .into_iter()
        .filter_map(|t| t.reference.task().map(str::to_owned))
        .collect())
}

/// Replaces every template in `input` with the value it names.
pub fn resolve_input(input: &Value, ctx: &ResolveContext<'_>) -> Result<Value, TemplateError> {
    Ok(match input {
        Value::String(s) => resolve_string(s, ctx)?,
        Value::Array(items) => Value::Array(
            items.iter().map(|v| resolve_input(v, ctx)).collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                out.insert(k.clone(), resolve_input(v, ctx)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

fn visit_strings(
    value: &Value,
    f: &mut dyn FnMut(&str) -> Result<(), TemplateError>,
) -> Result<(), TemplateError> {
    match value {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter().try_for_each(|v| visit_strings(v, f)),
        Value::Object(map) => map.values().try_for_each(|v| visit_strings(v, f)),
        _ => Ok(()),
    }
}

fn resolve_string(text: &str, ctx: &ResolveContext<'_>) -> Result<Value, TemplateError> {
    let pieces = split(text)?;
    if let [Piece::Template(t)] = pieces.as_slice() {
        return lookup(t, ctx).map(Cow::into_owned);
    }
    if pieces.iter().all(|p| matches!(p, Piece::Text(_))) {
        return Ok(Value::String(text.to_owned()));
    }
    let mut out = String::with_capacity(text.len());
    for piece in &pieces {
        match piece {
            Piece::Text(s) => out.push_str(s),
            Piece::Template(t) => match lookup(t, ctx)?.as_ref() {
                Value::String(s) => out.push_str(s),
                other => out.push_str(&other.to_string()),
            },
        }
    }
    Ok(Value::String(out))
}

fn lookup<'v>(t: &Template, ctx: &ResolveContext<'v>) -> Result<Cow<'v, Value>, TemplateError> {
    let template = || t.text.clone();
    let missing_output = |task: &str, key: String| TemplateError::MissingOutput {
        template: template(),
        task: task.to_owned(),
        key,
    };
    match &t.reference {
        TemplateRef::RunInput(path) => walk(ctx.run_input, path)
            .map(Cow::Borrowed)
            .map_err(|key| TemplateError::MissingRunInput { template: template(), key }),
        TemplateRef::Output { task, path } => match ctx.outputs.get(task) {
            Some(TaskOutputs::Single(value)) => {
                walk(value, path).map(Cow::Borrowed).map_err(|key| missing_output(task, key))
            }
            Some(TaskOutputs::Many(_)) => {
                Err(TemplateError::UseOutputs { template: template(), task: task.clone() })
            }
            None => Err(TemplateError::NoOutput { template: template(), task: task.clone() }),
        },
        TemplateRef::Outputs { task, path } => match ctx.outputs.get(task) {
            Some(TaskOutputs::Many(items)) => match path.split_first() {
                None => Ok(Cow::Owned(Value::Array(items.clone()))),
                Some((first, rest)) => {
                    let item = first
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| items.get(i))
                        .ok_or_else(|| missing_output(task, first.clone()))?;
                    walk(item, rest)
                        .map(Cow::Borrowed)
                        .map_err(|key| missing_output(task, format!("{first}.{key}")))
                }
            },
            // A fan-out that never expanded (its upstream failed) has no outputs.
            Some(TaskOutputs::Single(Value::Null)) if path.is_empty() => Ok(Cow::Owned(Value::Null)),
            Some(TaskOutputs::Single(Value::Null)) => Err(missing_output(task, path.join("."))),
            Some(TaskOutputs::Single(_)) => {
                Err(TemplateError::UseOutput { template: template(), task: task.clone() })
            }
            None => Err(TemplateError::NoOutput { template: template(), task: task.clone() }),
        },
        TemplateRef::Item(path) => {
            let item = ctx.item.ok_or_else(|| TemplateError::NoItem { template: template() })?;
            walk(item, path)
                .map(Cow::Borrowed)
                .map_err(|key| TemplateError::MissingItemField { template: template(), key })
        }
        TemplateRef::ParallelIndex => ctx
            .parallel_index
            .map(|i| Cow::Owned(Value::from(i)))
            .ok_or_else(|| TemplateError::NoParallel { template: template() }),
        TemplateRef::ParallelCount => ctx
            .parallel_count
            .map(|c| Cow::Owned(Value::from(c)))
            .ok_or_else(|| TemplateError::NoParallel { template: template() }),
    }
}

/// Follows `path` below `value`. On a miss, returns the path up to and
/// including the first missing segment, for the error message.
fn walk<'v>(value: &'v Value, path: &[String]) -> Result<&'v Value, String> {
    let mut current = value;
    for (depth, segment) in path.iter().enumerate() {
        let next = match current {
            Value::Object(map) => map.get(segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
        current = next.ok_or_else(|| path[..=depth].join("."))?;
    }
    Ok(current)
}

/// Splits `text` into literal text and templates.
fn split(text: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            pieces.push(Piece::Text(&rest[..start]));
        }
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| TemplateError::Unterminated { text: text.to_owned() })?;
        let whole = &rest[start..start + 2 + end + 2];
        pieces.push(Piece::Template(parse_one(whole, &after[..end])?));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(pieces)
}

/// Parses the inside of one `{{ ... }}`.
fn parse_one(whole: &str, inner: &str) -> Result<Template, TemplateError> {
    let template = || whole.to_owned();
    let invalid = |reason: &str| TemplateError::Invalid { template: template(), reason: reason.to_owned() };
    let inner = inner.trim();
    if inner.is_empty() {
        return Err(invalid("it is empty; write e.g. `{{ run.input.date }}`"));
    }
    let segments: Vec<&str> = inner.split('.').collect();
    for segment in &segments {
        if segment.is_empty() {
            return Err(invalid("empty name between dots"));
        }
        if !segment.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(invalid(
                "names may only hold letters, digits, `_` and `-`, separated by dots",
            ));
        }
    }
    let owned = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    let reference = match segments.as_slice() {
        ["run", "input", path @ ..] => TemplateRef::RunInput(owned(path)),
        ["run", ..] => return Err(invalid("write `run.input` or `run.input.<field>`")),
        ["tasks", task, "output", path @ ..] => {
            TemplateRef::Output { task: (*task).to_owned(), path: owned(path) }
        }
        ["tasks", task, "outputs", path @ ..] => {
            TemplateRef::Outputs { task: (*task).to_owned(), path: owned(path) }
        }
        ["tasks", ..] => {
            return Err(invalid("write `tasks.<task>.output` or `tasks.<task>.outputs`"));
        }
        ["item", path @ ..] => TemplateRef::Item(owned(path)),
        ["parallel", "index"] => TemplateRef::ParallelIndex,
        ["parallel", "count"] => TemplateRef::ParallelCount,
        ["parallel", ..] => return Err(invalid("write `parallel.index` or `parallel.count`")),
        [root, ..] => {
            return Err(TemplateError::UnknownRoot { template: template(), root: (*root).to_owned() });
        }
        [] => return Err(invalid("it is empty")),
    };
    Ok(Template { text: whole.to_owned(), reference })
}
