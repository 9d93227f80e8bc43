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
    #[error(
        "run input has no field `{key}` (read by template `{template}`); pass it when starting the run"
    )]
    MissingRunInput { template: String, key: String },
    #[error("output of task `{task}` has no field `{key}` (read by template `{template}`)")]
    MissingOutput {
        template: String,
        task: String,
        key: String,
    },
    #[error(
        "no output of task `{task}` is available to template `{template}`; add `{task}` to depends_on"
    )]
    NoOutput { template: String, task: String },
    #[error(
        "task `{task}` ran several instances, so template `{template}` must use `tasks.{task}.outputs`"
    )]
    UseOutputs { template: String, task: String },
    #[error("task `{task}` ran once, so template `{template}` must use `tasks.{task}.output`")]
    UseOutput { template: String, task: String },
    #[error("the item has no field `{key}` (read by template `{template}`)")]
    MissingItemField { template: String, key: String },
    #[error(
        "template `{template}` reads `item`, which only tasks with `parallel: {{for_each: ...}}` have"
    )]
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
            items
                .iter()
                .map(|v| resolve_input(v, ctx))
                .collect::<Result<_, _>>()?,
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
        TemplateRef::RunInput(path) => {
            walk(ctx.run_input, path).map(Cow::Borrowed).map_err(|key| {
                TemplateError::MissingRunInput {
                    template: template(),
                    key,
                }
            })
        }
        TemplateRef::Output { task, path } => match ctx.outputs.get(task) {
            Some(TaskOutputs::Single(value)) => walk(value, path)
                .map(Cow::Borrowed)
                .map_err(|key| missing_output(task, key)),
            Some(TaskOutputs::Many(_)) => Err(TemplateError::UseOutputs {
                template: template(),
                task: task.clone(),
            }),
            None => Err(TemplateError::NoOutput {
                template: template(),
                task: task.clone(),
            }),
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
            Some(TaskOutputs::Single(Value::Null)) if path.is_empty() => {
                Ok(Cow::Owned(Value::Null))
            }
            Some(TaskOutputs::Single(Value::Null)) => Err(missing_output(task, path.join("."))),
            Some(TaskOutputs::Single(_)) => Err(TemplateError::UseOutput {
                template: template(),
                task: task.clone(),
            }),
            None => Err(TemplateError::NoOutput {
                template: template(),
                task: task.clone(),
            }),
        },
        TemplateRef::Item(path) => {
            let item = ctx.item.ok_or_else(|| TemplateError::NoItem {
                template: template(),
            })?;
            walk(item, path)
                .map(Cow::Borrowed)
                .map_err(|key| TemplateError::MissingItemField {
                    template: template(),
                    key,
                })
        }
        TemplateRef::ParallelIndex => ctx
            .parallel_index
            .map(|i| Cow::Owned(Value::from(i)))
            .ok_or_else(|| TemplateError::NoParallel {
                template: template(),
            }),
        TemplateRef::ParallelCount => ctx
            .parallel_count
            .map(|c| Cow::Owned(Value::from(c)))
            .ok_or_else(|| TemplateError::NoParallel {
                template: template(),
            }),
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
            .ok_or_else(|| TemplateError::Unterminated {
                text: text.to_owned(),
            })?;
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
    let invalid = |reason: &str| TemplateError::Invalid {
        template: template(),
        reason: reason.to_owned(),
    };
    let inner = inner.trim();
    if inner.is_empty() {
        return Err(invalid("it is empty; write e.g. `{{ run.input.date }}`"));
    }
    let segments: Vec<&str> = inner.split('.').collect();
    for segment in &segments {
        if segment.is_empty() {
            return Err(invalid("empty name between dots"));
        }
        if !segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(invalid(
                "names may only hold letters, digits, `_` and `-`, separated by dots",
            ));
        }
    }
    let owned = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    let reference = match segments.as_slice() {
        ["run", "input", path @ ..] => TemplateRef::RunInput(owned(path)),
        ["run", ..] => return Err(invalid("write `run.input` or `run.input.<field>`")),
        ["tasks", task, "output", path @ ..] => TemplateRef::Output {
            task: (*task).to_owned(),
            path: owned(path),
        },
        ["tasks", task, "outputs", path @ ..] => TemplateRef::Outputs {
            task: (*task).to_owned(),
            path: owned(path),
        },
        ["tasks", ..] => {
            return Err(invalid(
                "write `tasks.<task>.output` or `tasks.<task>.outputs`",
            ));
        }
        ["item", path @ ..] => TemplateRef::Item(owned(path)),
        ["parallel", "index"] => TemplateRef::ParallelIndex,
        ["parallel", "count"] => TemplateRef::ParallelCount,
        ["parallel", ..] => return Err(invalid("write `parallel.index` or `parallel.count`")),
        [root, ..] => {
            return Err(TemplateError::UnknownRoot {
                template: template(),
                root: (*root).to_owned(),
            });
        }
        [] => return Err(invalid("it is empty")),
    };
    Ok(Template {
        text: whole.to_owned(),
        reference,
    })
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn outputs() -> BTreeMap<String, TaskOutputs> {
        BTreeMap::from([
            (
                "discover".to_owned(),
                TaskOutputs::Single(
                    json!({"count": 2, "files": ["a.csv", "b.csv"], "meta": {"by": "x"}}),
                ),
            ),
            (
                "process".to_owned(),
                TaskOutputs::Many(vec![json!({"rows": 1}), json!({"rows": 2})]),
            ),
            ("failed".to_owned(), TaskOutputs::Single(Value::Null)),
        ])
    }

    fn resolve_with(input: Value, item: Option<&Value>) -> Result<Value, TemplateError> {
        let outputs = outputs();
        let run_input = json!({"date": "2026-11-26", "n": 3, "opts": {"deep": [true]}});
        let ctx = ResolveContext {
            run_input: &run_input,
            outputs: &outputs,
            item,
            parallel_index: Some(1),
            parallel_count: Some(2),
        };
        resolve_input(&input, &ctx)
    }

    #[test]
    fn resolves_every_kind_of_template() {
        let item = json!({"path": "a.csv", "size": 10});
        let cases = [
            (json!("{{ run.input.date }}"), json!("2026-11-26")),
            (json!("{{run.input.n}}"), json!(3)),
            (json!("{{  run.input.opts  }}"), json!({"deep": [true]})),
            (json!("{{ run.input.opts.deep.0 }}"), json!(true)),
            (
                json!("{{ run.input }}"),
                json!({"date": "2026-11-26", "n": 3, "opts": {"deep": [true]}}),
            ),
            (
                json!("{{ tasks.discover.output }}"),
                json!({"count": 2, "files": ["a.csv", "b.csv"], "meta": {"by": "x"}}),
            ),
            (json!("{{ tasks.discover.output.files.1 }}"), json!("b.csv")),
            (
                json!("{{ tasks.process.outputs }}"),
                json!([{"rows": 1}, {"rows": 2}]),
            ),
            (json!("{{ tasks.process.outputs.1.rows }}"), json!(2)),
            (json!("{{ tasks.failed.output }}"), Value::Null),
            (json!("{{ tasks.failed.outputs }}"), Value::Null),
            (json!("{{ item }}"), json!({"path": "a.csv", "size": 10})),
            (json!("{{ item.size }}"), json!(10)),
            (json!("{{ parallel.index }}"), json!(1)),
            (json!("{{ parallel.count }}"), json!(2)),
            // Interpolation: strings raw, everything else as compact JSON.
            (json!("day={{ run.input.date }}"), json!("day=2026-11-26")),
            (
                json!("{{ parallel.index }}/{{ parallel.count }}"),
                json!("1/2"),
            ),
            (
                json!("files: {{ tasks.discover.output.files }}"),
                json!(r#"files: ["a.csv","b.csv"]"#),
            ),
            (json!(" {{ run.input.n }}"), json!(" 3")),
            (
                json!("null? {{ tasks.failed.output }}"),
                json!("null? null"),
            ),
            // Recursion into arrays and objects; keys stay as written.
            (
                json!({"{{ run.input.n }}": ["{{ item.path }}", {"k": "{{ run.input.n }}"}], "plain": 1}),
                json!({"{{ run.input.n }}": ["a.csv", {"k": 3}], "plain": 1}),
            ),
            (
                json!("no templates } { here"),
                json!("no templates } { here"),
            ),
            (json!(42), json!(42)),
        ];
        for (input, expected) in cases {
            assert_eq!(
                resolve_with(input.clone(), Some(&item)).unwrap(),
                expected,
                "{input}"
            );
        }
    }

    fn check_error(input: Value, expected: Expect) {
        expected.assert_eq(&resolve_with(input, None).unwrap_err().to_string());
    }

    #[test]
    fn resolution_errors_name_the_template_and_the_key() {
        check_error(
            json!("{{ run.input.dat }}"),
            expect![
                "run input has no field `dat` (read by template `{{ run.input.dat }}`); pass it when starting the run"
            ],
        );
        check_error(
            json!("x {{ run.input.opts.deep.5 }}"),
            expect![
                "run input has no field `opts.deep.5` (read by template `{{ run.input.opts.deep.5 }}`); pass it when starting the run"
            ],
        );
        check_error(
            json!("{{ tasks.discover.output.meta.who }}"),
            expect![
                "output of task `discover` has no field `meta.who` (read by template `{{ tasks.discover.output.meta.who }}`)"
            ],
        );
        check_error(
            json!("{{ tasks.failed.output.rows }}"),
            expect![
                "output of task `failed` has no field `rows` (read by template `{{ tasks.failed.output.rows }}`)"
            ],
        );
        check_error(
            json!("{{ tasks.process.outputs.7 }}"),
            expect![
                "output of task `process` has no field `7` (read by template `{{ tasks.process.outputs.7 }}`)"
            ],
        );
        check_error(
            json!("{{ tasks.process.outputs.0.cols }}"),
            expect![
                "output of task `process` has no field `0.cols` (read by template `{{ tasks.process.outputs.0.cols }}`)"
            ],
        );
        check_error(
            json!("{{ tasks.nope.output }}"),
            expect![
                "no output of task `nope` is available to template `{{ tasks.nope.output }}`; add `nope` to depends_on"
            ],
        );
        check_error(
            json!("{{ tasks.process.output }}"),
            expect![
                "task `process` ran several instances, so template `{{ tasks.process.output }}` must use `tasks.process.outputs`"
            ],
        );
        check_error(
            json!("{{ tasks.discover.outputs }}"),
            expect![
                "task `discover` ran once, so template `{{ tasks.discover.outputs }}` must use `tasks.discover.output`"
            ],
        );
        check_error(
            json!(["{{ item }}"]),
            expect![
                "template `{{ item }}` reads `item`, which only tasks with `parallel: {for_each: ...}` have"
            ],
        );
        check_error(
            json!({"a": "{{ nope }}"}),
            expect![
                "unknown name `nope` in template `{{ nope }}`; templates start with `run.input`, `tasks.<task>.output`, `tasks.<task>.outputs`, `item` or `parallel`"
            ],
        );
        check_error(
            json!("{{ run.input.date"),
            expect!["unterminated `{{` in `{{ run.input.date`; close the template with `}}`"],
        );
        check_error(
            json!("{{ a b }}"),
            expect![
                "invalid template `{{ a b }}`: names may only hold letters, digits, `_` and `-`, separated by dots"
            ],
        );

        let outputs = BTreeMap::new();
        let ctx = ResolveContext {
            run_input: &Value::Null,
            outputs: &outputs,
            item: None,
            parallel_index: None,
            parallel_count: None,
        };
        expect!["template `{{ parallel.count }}` reads `parallel`, which only tasks with `parallel` set have"]
            .assert_eq(&resolve_input(&json!("{{ parallel.count }}"), &ctx).unwrap_err().to_string());
    }

    #[test]
    fn task_refs_lists_the_tasks_read() {
        let input = json!({
            "a": "{{ tasks.extract.output.x }} and {{ tasks.load.outputs }}",
            "b": ["{{ run.input.x }}", "{{ item }}", "{{ tasks.extract.output }}"],
            "{{ tasks.keys.output }}": 1,
        });
        let refs = task_refs(&input).unwrap();
        assert_eq!(refs.into_iter().collect::<Vec<_>>(), ["extract", "load"]);
        assert!(task_refs(&json!("{{ tasks.x")).is_err());
    }

    #[test]
    fn parses_template_references() {
        let refs: Vec<TemplateRef> =
            parse_templates("{{tasks.t.output.a.b}}{{ item }}{{ run.input }}")
                .unwrap()
                .into_iter()
                .map(|t| t.reference)
                .collect();
        assert_eq!(
            refs,
            [
                TemplateRef::Output {
                    task: "t".into(),
                    path: vec!["a".into(), "b".into()]
                },
                TemplateRef::Item(vec![]),
                TemplateRef::RunInput(vec![]),
            ]
        );
    }

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-z {}]{0,12}".prop_map(Value::from),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        scalar().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn text_without_templates_is_unchanged(text in "[^{]*") {
            let input = Value::String(text);
            prop_assert_eq!(resolve_with(input.clone(), None).unwrap(), input);
        }

        #[test]
        fn exact_templates_keep_the_type_and_others_interpolate(
            v in value(),
            pre in "[a-z ]{0,5}",
            post in "[a-z ]{0,5}",
        ) {
            let outputs = BTreeMap::new();
            let run_input = json!({"x": v.clone()});
            let ctx = ResolveContext { run_input: &run_input, outputs: &outputs, item: None, parallel_index: None, parallel_count: None };
            prop_assert_eq!(resolve_input(&json!("{{ run.input.x }}"), &ctx).unwrap(), v.clone());
            if !(pre.is_empty() && post.is_empty()) {
                let rendered = match &v { Value::String(s) => s.clone(), other => other.to_string() };
                let got = resolve_input(&json!(format!("{pre}{{{{run.input.x}}}}{post}")), &ctx).unwrap();
                prop_assert_eq!(got, Value::String(format!("{pre}{rendered}{post}")));
            }
        }

        #[test]
        fn parsing_never_panics(text in "\\PC{0,40}", braces in "[{}a-z. ]{0,20}") {
            let _ = parse_templates(&text);
            let _ = parse_templates(&braces);
            let _ = task_refs(&Value::String(braces));
        }
    }
}
