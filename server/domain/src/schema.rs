//! A JSON Schema (draft 2020-12) of the workflow YAML, for editors: with it,
//! yaml-language-server completes field names and flags typos as you type.
//!
//! It checks structure only; [`crate::parse::parse_workflow`] remains the
//! authority (unknown tasks, cycles, templates are beyond a schema).

use serde_json::{Value, json};

use crate::model::{
    Catchup, DEFAULT_EXECUTOR, DEFAULT_TIMEOUT_SECONDS, DEFAULT_TIMEZONE, ImagePullPolicy,
    KNOWN_EXECUTORS,
};
use crate::parse::MAX_NAME_LEN;
use crate::schedule::MAX_CATCHUP_FIRES;
use crate::types::{REF_PREFIX, TYPE_NAMES};

/// The schema of a workflow file.
pub fn workflow_json_schema() -> Value {
    let name = json!({
        "type": "string",
        "pattern": "^[a-z0-9][a-z0-9_-]*$",
        "maxLength": MAX_NAME_LEN,
    });
    let field_ref = json!({
        "type": "string",
        "pattern": "^[^.]+(\\.[^.]+)+$",
        "description": "`task.field[.sub]`: a field of an upstream task's output, e.g. `discover.files`.",
    });
    let count = json!({"type": "integer", "minimum": 0, "maximum": u32::MAX});
    let positive = json!({"type": "integer", "minimum": 1, "maximum": u32::MAX});
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "ork workflow",
        "description": "A workflow: named tasks, their dependencies and how each runs.",
        "type": "object",
        "required": ["name", "tasks"],
        "additionalProperties": false,
        "properties": {
            "name": merge(&name, json!({"description": "Workflow name: lowercase letters, digits, `_` and `-`."})),
            "schedule": {
                "type": "string",
                "description": "Cron expression: 5 fields (minute hour day-of-month month day-of-week, Sunday = 0 or 7) or 6 with seconds first.",
                "examples": ["0 2 * * *", "0 */15 * * * *"],
            },
            "timezone": {
                "type": "string",
                "default": DEFAULT_TIMEZONE,
                "description": "IANA time zone the schedule is read in, e.g. `Europe/Paris`.",
            },
            "catchup": {
                "enum": Catchup::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
                "default": Catchup::default().as_str(),
                "description": format!(
                    "Fires missed while no scheduler ran: `skip` drops them (a fire up to a minute late still runs), \
                     `latest` runs the most recent one, `all` runs each, oldest first, up to the latest {MAX_CATCHUP_FIRES}."
                ),
            },
            "concurrency": merge(&positive, json!({"description": "Most runs of this workflow at once."})),
            "on": {
                "type": "object",
                "description": "What else starts runs: an event subscription (`ork event send NAME`, `POST /events/NAME`) and signed webhooks (`POST /hooks/WORKFLOW`). The run's input is `{\"event\": {\"id\", \"name\", \"data\"}}`.",
                "additionalProperties": false,
                "properties": {
                    "event": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$", "description": "The event name to start a run on, e.g. `order.created`."},
                    "filter": {
                        "type": "object",
                        "maxProperties": crate::events::MAX_FILTER_FIELDS,
                        "description": "Fields the event's data must have: a dotted path (`customer.tier`) to the value it must equal.",
                    },
                    "webhook": {
                        "type": "object",
                        "required": ["secret"],
                        "additionalProperties": false,
                        "properties": {"secret": {"type": "string", "description": "The name of the server secret (ORK_SECRET_NAME or a file in --secrets-dir) webhook calls are signed with (GitHub-style `X-Hub-Signature-256`)."}},
                    },
                },
            },
            "inputs": {
                "type": "object",
                "description": "The run input's fields, each a type (the JSON-Schema subset of `types`) with an optional `default` and `description`. A field without a default is required; a run with an undeclared field is refused.",
                "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_-]*$"},
                "additionalProperties": {"$ref": "#/$defs/type_schema"},
            },
            "defaults": {
                "type": "object",
                "description": "Task fields every task inherits unless it sets its own.",
                "additionalProperties": false,
                "properties": {
                    "python": {
                        "type": "string",
                        "description": "The interpreter of `.py` task files, e.g. `.venv/bin/python` (relative to the workflow file) or `python3.12` (on PATH).",
                    },
                    "executor": {"enum": KNOWN_EXECUTORS, "description": "`executor` of tasks that name none."},
                    "image": {"type": "string", "description": "`image` of container tasks (`docker`, `kubernetes`, `fargate`, `cloudrun`, `containerapp`) that name none."},
                    "resources": merge(&resources_schema(&count), json!({"description": "Each of `cpu`, `memory`, `gpu` for tasks that do not set it."})),
                },
            },
            "types": {
                "type": "object",
                "description": format!(
                    "Named types that tasks' `output_type` refers to, in a JSON-Schema subset. \
                     One type refers to another with `$ref: \"{REF_PREFIX}NAME\"`."
                ),
                "additionalProperties": {"$ref": "#/$defs/type_schema"},
            },
            "tasks": {
                "type": "array",
                "minItems": 1,
                "description": "The tasks, in any order; `depends_on` decides when each runs.",
                "items": {"$ref": "#/$defs/task"},
            },
        },
        "$defs": {
            "task": task_schema(&name, &field_ref, &count, &positive),
            "type_schema": type_schema(),
        },
    })
}

/// The schema of one task, apart to keep `json!` within its recursion limit.
fn task_schema(name: &Value, field_ref: &Value, count: &Value, positive: &Value) -> Value {
    let mut schema = json!({
        "type": "object",
        "required": ["name"],
        "additionalProperties": false,
        // A launched task (the default executor) runs a file or a command.
        "if": {"properties": {"executor": {"const": DEFAULT_EXECUTOR}}},
        "then": {"anyOf": [{"required": ["file"]}, {"required": ["command"]}]},
        "properties": {
            "name": merge(name, json!({"description": "Task name, unique in the workflow."})),
            "executor": {
                "enum": KNOWN_EXECUTORS,
                "default": DEFAULT_EXECUTOR,
                "description": "Where the task runs.",
            },
            "file": {
                "type": "string",
                "description": "Script or program to run, relative to the workflow file (no `..`). With `command`, its path is appended to the command.",
            },
            "command": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "string"},
                "description": "A program and its arguments, run without a shell, e.g. [\"bash\", \"-c\", \"echo hi\"]. With `file`, the file's path is appended as the last argument. A relative program path with a `/` is relative to the workflow file; a bare name is looked up on PATH.",
            },
            "python": {
                "type": "string",
                "description": "The interpreter of a `.py` `file` (default `python3` on PATH), e.g. `.venv/bin/python` (relative to the workflow file).",
            },
            "handler": {
                "type": "string",
                "description": "For `executor: workers`: the name a pool worker registered its function under.",
            },
            "config_file": {
                "type": "string",
                "description": "Extra file sent along with the task, relative to the workflow file.",
            },
            "input": {
                "description": "Any JSON value given to the task. Strings may hold templates: `{{ run.input.x }}`, `{{ tasks.t.output.field }}`, `{{ tasks.t.outputs }}`, `{{ item }}`, `{{ parallel.index }}`, `{{ parallel.count }}`.",
            },
            "depends_on": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Tasks that must finish first. Every task a template or `parallel` reads must be upstream.",
            },
            "timeout_seconds": merge(positive, json!({"default": DEFAULT_TIMEOUT_SECONDS, "description": "Most seconds one attempt may run."})),
            "retries": merge(count, json!({"default": 0, "description": "Extra attempts after a failure."})),
            "retry_delay_seconds": merge(count, json!({"default": 0, "description": "Seconds to wait before a retry."})),
            "retry_backoff": {
                "enum": ["fixed", "exponential"],
                "default": "fixed",
                "description": "`exponential` doubles the delay each attempt, with ±20% jitter.",
            },
            "retry_max_delay_seconds": merge(positive, json!({"description": "Ceiling of an exponential delay."})),
            "parallel": {
                "description": "Run several instances: a number, `{count: task.field}` or `{for_each: task.field}`.",
                "oneOf": [
                    positive,
                    {"type": "object", "required": ["count"], "additionalProperties": false, "properties": {"count": field_ref}},
                    {"type": "object", "required": ["for_each"], "additionalProperties": false, "properties": {"for_each": field_ref}},
                ],
            },
            "concurrency": merge(positive, json!({"description": "Most instances of this task at once."})),
            "resources": resources_schema(count),
            "env": {
                "type": "object",
                "description": "Environment variables. Names starting with `ORK_` are reserved.",
                "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$", "not": {"pattern": "^[Oo][Rr][Kk]_"}},
                "additionalProperties": {
                    "oneOf": [
                        {"type": ["string", "number", "boolean"]},
                        {"type": "object", "required": ["secret"], "additionalProperties": false, "properties": {"secret": {"type": "string"}}},
                        {"type": "object", "required": ["from_env"], "additionalProperties": false, "properties": {"from_env": {"type": "string"}}},
                    ],
                },
            },
            "on_failure": {
                "enum": ["skip", "run"],
                "default": "skip",
                "description": "What to do when an upstream task did not succeed.",
            },
            "output_type": {"type": "string", "description": "A key of `types` describing the output."},
        },
    });
    // Added apart: one `json!` this big exceeds the macro's recursion limit.
    schema["properties"]["image"] = json!({
        "type": "string",
        "description": "For container tasks (`docker`, `kubernetes`, `fargate`, `cloudrun`, `containerapp`): the container image the task runs in.",
        "examples": ["python:3.12-slim"],
    });
    schema["properties"]["image_pull_policy"] = json!({
        "enum": ImagePullPolicy::ALL.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        "default": ImagePullPolicy::default().as_str(),
        "description": "When the engine pulls the image: if it does not have it, before every attempt, or never.",
    });
    schema
}

/// `resources`: Kubernetes quantities, enforced by the container executors.
fn resources_schema(count: &Value) -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "description": "Limits as Kubernetes quantities: Docker enforces them on the container, Kubernetes as the pod's requests and limits.",
        "properties": {
            "cpu": {"type": ["string", "number"], "examples": ["500m", "2"]},
            "memory": {"type": ["string", "integer"], "examples": ["256Mi", "1Gi"]},
            "gpu": count,
        },
    })
}

/// The JSON-Schema subset of `types` (see [`crate::types`]); other keywords
/// are refused at deploy, so the schema refuses them too.
fn type_schema() -> Value {
    let schema = json!({"$ref": "#/$defs/type_schema"});
    let length = json!({"type": "integer", "minimum": 0});
    let type_name = json!({"enum": TYPE_NAMES});
    json!({
        "type": "object",
        "description": "A type: `type`, `properties`, `required`, `additionalProperties`, `items`, `enum`, `const`, `minimum`, `maximum`, `minLength`, `maxLength`, `minItems`, `maxItems`, `$ref`.",
        "additionalProperties": false,
        "properties": {
            "type": {
                "description": "The JSON type, or a list of allowed ones. `integer` is a number without a decimal point.",
                "oneOf": [type_name, {"type": "array", "minItems": 1, "items": type_name}],
            },
            "properties": {
                "type": "object",
                "description": "Schemas of an object's properties.",
                "additionalProperties": schema,
            },
            "required": {"type": "array", "items": {"type": "string"}, "description": "Properties an object must have."},
            "additionalProperties": {
                "description": "`false` forbids properties not listed; a schema checks them. Absent: any are allowed.",
                "oneOf": [{"type": "boolean"}, schema],
            },
            "items": merge(&schema, json!({"description": "The schema every item of an array matches."})),
            "enum": {"type": "array", "minItems": 1, "description": "The allowed values."},
            "const": {"description": "The only allowed value."},
            "minimum": {"type": "number", "description": "Smallest allowed number (inclusive)."},
            "maximum": {"type": "number", "description": "Largest allowed number (inclusive)."},
            "minLength": merge(&length, json!({"description": "Fewest characters in a string."})),
            "maxLength": merge(&length, json!({"description": "Most characters in a string."})),
            "minItems": merge(&length, json!({"description": "Fewest items in an array."})),
            "maxItems": merge(&length, json!({"description": "Most items in an array."})),
            "$ref": {
                "type": "string",
                "pattern": format!("^{REF_PREFIX}.+$"),
                "description": format!("Another declared type: `{REF_PREFIX}NAME`."),
            },
            "title": {"type": "string"},
            "description": {"type": "string"},
            "default": {},
            "examples": {"type": "array"},
            "$comment": {"type": "string"},
        },
    })
}

/// `base` with the keys of `extra` added.
fn merge(base: &Value, extra: Value) -> Value {
    let mut out = base.clone();
    if let (Value::Object(out), Value::Object(extra)) = (&mut out, extra) {
        out.extend(extra);
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value, json};

    use super::*;
    use crate::parse::tests::{ETL, FANOUT, MINIMAL};

    /// A small validator for the keywords the schema uses, enough to prove
    /// that the examples fit it and that typos do not.
    fn validate(schema: &Value, value: &Value, root: &Value, path: &str, errors: &mut Vec<String>) {
        let Some(schema) = schema.as_object() else {
            return;
        };
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            let target = reference
                .strip_prefix("#/")
                .map(|p| p.split('/').fold(root, |node, key| &node[key]))
                .unwrap_or(&Value::Null);
            assert!(!target.is_null(), "dangling $ref {reference}");
            validate(target, value, root, path, errors);
        }
        let fail = |errors: &mut Vec<String>, what: String| errors.push(format!("{path}: {what}"));
        if let Some(types) = schema.get("type") {
            let names: Vec<&str> = match types {
                Value::String(s) => vec![s.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            let matches = |t: &str| match t {
                "object" => value.is_object(),
                "array" => value.is_array(),
                "string" => value.is_string(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                "boolean" => value.is_boolean(),
                "null" => value.is_null(),
                _ => false,
            };
            if !names.iter().any(|t| matches(t)) {
                fail(errors, format!("expected {names:?}, found {value}"));
            }
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array)
            && !options.contains(value)
        {
            fail(errors, format!("{value} not in {options:?}"));
        }
        if let Some(c) = schema.get("const")
            && c != value
        {
            fail(errors, format!("{value} is not {c}"));
        }
        if let (Some(min), Some(n)) = (
            schema.get("minimum").and_then(Value::as_f64),
            value.as_f64(),
        ) && n < min
        {
            fail(errors, format!("{n} < {min}"));
        }
        if let (Some(min), Some(items)) = (
            schema.get("minItems").and_then(Value::as_u64),
            value.as_array(),
        ) && (items.len() as u64) < min
        {
            fail(errors, format!("fewer than {min} items"));
        }
        if let (Some(item_schema), Some(items)) = (schema.get("items"), value.as_array()) {
            for (i, item) in items.iter().enumerate() {
                validate(item_schema, item, root, &format!("{path}[{i}]"), errors);
            }
        }
        if let Some(object) = value.as_object() {
            let empty = Map::new();
            let properties = schema
                .get("properties")
                .and_then(Value::as_object)
                .unwrap_or(&empty);
            for required in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if !object.contains_key(required.as_str().unwrap_or_default()) {
                    fail(errors, format!("missing {required}"));
                }
            }
            for (key, v) in object {
                let child = format!("{path}.{key}");
                match (properties.get(key), schema.get("additionalProperties")) {
                    (Some(s), _) => validate(s, v, root, &child, errors),
                    (None, Some(Value::Bool(false))) => fail(errors, format!("unknown key {key}")),
                    (None, Some(s)) => validate(s, v, root, &child, errors),
                    (None, None) => {}
                }
            }
        }
        let passes = |s: &Value| {
            let mut e = Vec::new();
            validate(s, value, root, path, &mut e);
            e.is_empty()
        };
        if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
            let n = options.iter().filter(|s| passes(s)).count();
            if n != 1 {
                fail(errors, format!("matches {n} of oneOf"));
            }
        }
        if let Some(options) = schema.get("anyOf").and_then(Value::as_array)
            && !options.iter().any(&passes)
        {
            // Reported as the first option's errors, the most likely fix.
            if let Some(first) = options.first() {
                validate(first, value, root, path, errors);
            }
        }
        if let (Some(condition), Some(then)) = (schema.get("if"), schema.get("then"))
            && passes(condition)
        {
            validate(then, value, root, path, errors);
        }
    }

    fn errors_for(yaml: &str) -> Vec<String> {
        let value = crate::parse::node_json(yaml);
        let schema = workflow_json_schema();
        let mut errors = Vec::new();
        validate(&schema, &value, &schema, "$", &mut errors);
        errors
    }

    #[test]
    fn examples_fit_the_schema() {
        for example in [ETL, MINIMAL, FANOUT] {
            assert_eq!(errors_for(example), Vec::<String>::new(), "{example}");
        }
    }

    #[test]
    fn schema_catches_structural_mistakes() {
        let errors = errors_for(
            "name: wf\ntasks:\n  - name: a\n    dependson: [b]\n    parallel: 0\n    executor: subprocess\n",
        );
        assert_eq!(
            errors,
            [
                "$.tasks[0]: unknown key dependson",
                "$.tasks[0].parallel: matches 0 of oneOf",
                "$.tasks[0]: missing \"file\"",
            ]
        );
        assert_eq!(
            errors_for("tasks: []\n"),
            ["$: missing \"name\"", "$.tasks: fewer than 1 items"]
        );
    }

    #[test]
    fn schema_covers_catchup_and_types() {
        assert_eq!(
            errors_for(
                "name: wf\ncatchup: sometimes\ntypes:\n  t: {type: object, pattern: x, properties: {a: {type: [strng]}}, additionalProperties: {items: {$ref: '#/types/t'}}}\ntasks: [{name: a, file: a.sh}]\n"
            ),
            [
                "$.catchup: \"sometimes\" not in [String(\"skip\"), String(\"latest\"), String(\"all\")]",
                "$.types.t: unknown key pattern",
                "$.types.t.properties.a.type: matches 0 of oneOf",
            ]
        );
        let schema = workflow_json_schema();
        let top: Vec<&str> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut top = top;
        top.sort_unstable();
        let mut known = crate::parse::workflow_fields().to_vec();
        known.sort_unstable();
        assert_eq!(top, known);
        let keywords: Vec<&str> = schema["$defs"]["type_schema"]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut keywords = keywords;
        keywords.sort_unstable();
        let mut supported: Vec<&str> = crate::types::KEYWORDS
            .iter()
            .chain(crate::types::ANNOTATIONS)
            .copied()
            .collect();
        supported.sort_unstable();
        assert_eq!(keywords, supported);
    }

    #[test]
    fn schema_lists_every_task_field_and_describes_them() {
        let schema = workflow_json_schema();
        let properties = schema["$defs"]["task"]["properties"].as_object().unwrap();
        let keys: Vec<&str> = properties.keys().map(String::as_str).collect();
        let mut known = crate::parse::task_fields().to_vec();
        known.sort_unstable();
        let mut keys_sorted = keys.clone();
        keys_sorted.sort_unstable();
        assert_eq!(keys_sorted, known);
        for (key, property) in properties {
            assert!(
                property.get("description").is_some(),
                "task field {key} has no description"
            );
        }
        assert_eq!(
            schema["$schema"],
            json!("https://json-schema.org/draft/2020-12/schema")
        );
    }
}
