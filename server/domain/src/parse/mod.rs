//! Parsing and validating workflow YAML into a [`WorkflowDefinition`].
//!
//! Parsing goes through a position-keeping tree ([`node`]) rather than
//! straight into the model, so that every error can name its task, its field
//! and its line, and so that all errors of a file are reported at once.

mod checks;
mod node;
mod task;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::BTreeSet;
use std::fmt;

use crate::model::{Catchup, DEFAULT_TIMEZONE, Resources, TaskDefinition, WorkflowDefinition};
use crate::suggest;
pub(crate) use node::{Kind, Node, Pos};

/// Most tasks one workflow may have by default; keeps the DAG's upstream
/// sets small.
pub const MAX_TASKS: usize = 1000;
/// Longest workflow or task name, so names fit in labels and object paths.
pub const MAX_NAME_LEN: usize = 63;
/// Largest workflow file accepted by default, in bytes.
pub const MAX_YAML_BYTES: usize = node::MAX_YAML_BYTES;
/// Deepest YAML nesting any configuration accepts (the parser's stack).
pub const MAX_YAML_DEPTH: usize = node::MAX_DEPTH;
/// Most YAML values (aliases expanded) accepted by default.
pub const MAX_YAML_NODES: usize = node::MAX_NODES;

/// Bounds on one workflow file, checked before the document costs memory or
/// time. A server takes them from its options; the defaults are the
/// constants above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    /// Largest file, in bytes.
    pub max_bytes: usize,
    /// Deepest nesting; values above [`MAX_YAML_DEPTH`] count as it.
    pub max_depth: usize,
    /// Most values after alias expansion (each use of an alias counts).
    pub max_nodes: usize,
    /// Most tasks.
    pub max_tasks: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        Self {
            max_bytes: MAX_YAML_BYTES,
            max_depth: MAX_YAML_DEPTH,
            max_nodes: MAX_YAML_NODES,
            max_tasks: MAX_TASKS,
        }
    }
}

/// Where the YAML came from and what else was sent with it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ParseOptions<'a> {
    /// File name used in messages, e.g. `etl.yaml`.
    pub source: &'a str,
    /// When set, every `file` and `config_file` must be one of these paths.
    pub files: Option<&'a BTreeSet<String>>,
    /// The absolute folder of the workflow file on the machine that deploys
    /// it: relative `python` and `command` paths of subprocess tasks
    /// (`.venv/bin/python`) are resolved against it. Without it such paths
    /// are refused, since nothing else says what they are relative to.
    pub base_dir: Option<&'a str>,
    /// Size, depth, alias expansion and task count bounds.
    pub limits: ParseLimits,
}

/// One problem in a workflow file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// The file name from [`ParseOptions::source`], so each error prints alone.
    pub source: String,
    pub task: Option<String>,
    pub field: Option<String>,
    /// 1-based, when the YAML parser could tell.
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for ValidationError {
    /// `etl.yaml:12:5: task `load`, field `depends_on`: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.source.is_empty() {
            f.write_str(&self.source)?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
                if let Some(column) = self.column {
                    write!(f, ":{column}")?;
                }
            }
            f.write_str(": ")?;
        } else if let Some(line) = self.line {
            write!(f, "line {line}")?;
            if let Some(column) = self.column {
                write!(f, ", column {column}")?;
            }
            f.write_str(": ")?;
        }
        match (&self.task, &self.field) {
            (Some(task), Some(field)) => write!(f, "task `{task}`, field `{field}`: ")?,
            (Some(task), None) => write!(f, "task `{task}`: ")?,
            (None, Some(field)) => write!(f, "field `{field}`: ")?,
            (None, None) => {}
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ValidationError {}

/// Every problem found in a workflow file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl fmt::Display for ValidationErrors {
    /// One error per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Collects errors as validation goes, so that one pass reports them all.
pub(crate) struct Errors<'a> {
    source: &'a str,
    list: Vec<ValidationError>,
}

impl Errors<'_> {
    pub(crate) fn push(
        &mut self,
        task: Option<&str>,
        field: Option<&str>,
        pos: Pos,
        message: impl Into<String>,
    ) {
        self.list.push(ValidationError {
            source: self.source.to_owned(),
            task: task.map(str::to_owned),
            field: field.map(str::to_owned),
            line: pos.line(),
            column: pos.column(),
            message: message.into(),
        });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

const WORKFLOW_FIELDS: &[&str] = &[
    "name",
    "schedule",
    "timezone",
    "catchup",
    "concurrency",
    "on",
    "inputs",
    "defaults",
    "types",
    "tasks",
];

/// The fields a workflow's `defaults:` may set for its tasks.
const DEFAULT_FIELDS: &[&str] = &["python", "executor", "image", "resources"];

/// Parses and validates a workflow file. On failure, returns every problem
/// found (a YAML syntax error stops parsing, so it comes alone).
pub fn parse_workflow(
    yaml: &str,
    opts: &ParseOptions<'_>,
) -> Result<WorkflowDefinition, ValidationErrors> {
    let mut errors = Errors {
        source: opts.source,
        list: Vec::new(),
    };
    let root = match node::load(yaml, &opts.limits) {
        Ok(root) => root,
        Err(e) => {
            errors.push(None, None, e.pos, e.message);
            return Err(ValidationErrors(errors.list));
        }
    };
    let entries = match root.kind {
        Kind::Map(entries) => entries,
        Kind::Null => {
            errors.push(
                None,
                None,
                root.pos,
                "the file is empty; a workflow needs `name` and `tasks`",
            );
            return Err(ValidationErrors(errors.list));
        }
        _ => {
            let found = root.describe();
            errors.push(
                None,
                None,
                root.pos,
                format!("expected a mapping with `name` and `tasks` at the top, found {found}"),
            );
            return Err(ValidationErrors(errors.list));
        }
    };

    let mut def = WorkflowDefinition {
        name: String::new(),
        schedule: None,
        timezone: DEFAULT_TIMEZONE.to_owned(),
        catchup: Catchup::default(),
        concurrency: None,
        inputs: None,
        defaults: Default::default(),
        base_dir: None,
        on: Default::default(),
        types: Default::default(),
        tasks: Vec::new(),
    };
    let mut has_name = false;
    let mut tasks_node = None;
    let mut inputs_node = None;
    let mut defaults = task::TaskDefaults::default();
    for (key, value) in &entries {
        let Some(field) = key_name(key, None, &mut errors) else {
            continue;
        };
        if matches!(value.kind, Kind::Null) && field != "tasks" && field != "name" {
            continue;
        }
        let f = Some(field.as_str());
        match field.as_str() {
            "name" => match text(value).and_then(|s| check_name(&s, value.pos).map(|()| s)) {
                Ok(name) => {
                    def.name = name;
                    has_name = true;
                }
                Err((pos, msg)) => {
                    has_name = true;
                    errors.push(None, f, pos, msg);
                }
            },
            "schedule" => match text(value) {
                Ok(expr) => match cron_schedule(&expr) {
                    Ok(_) => def.schedule = Some(expr),
                    Err(msg) => errors.push(None, f, value.pos, msg),
                },
                Err((pos, msg)) => errors.push(None, f, pos, msg),
            },
            "timezone" => match text(value) {
                Ok(tz) if tz.parse::<chrono_tz::Tz>().is_ok() => def.timezone = tz,
                Ok(tz) => errors.push(
                    None,
                    f,
                    value.pos,
                    format!(
                        "unknown time zone `{tz}`; use an IANA name such as `UTC` or `Europe/Paris`"
                    ),
                ),
                Err((pos, msg)) => errors.push(None, f, pos, msg),
            },
            "catchup" => match text(value) {
                Ok(word) => match Catchup::parse(&word) {
                    Some(policy) => def.catchup = policy,
                    None => errors.push(
                        None,
                        f,
                        value.pos,
                        format!(
                            "unknown catchup policy `{word}`; use `skip` (drop missed fires), \
                             `latest` (run the most recent one, the default) or `all` (run each, \
                             up to {})",
                            crate::schedule::MAX_CATCHUP_FIRES
                        ),
                    ),
                },
                Err((pos, msg)) => errors.push(None, f, pos, msg),
            },
            "concurrency" => match at_least_one(value) {
                Ok(n) => def.concurrency = Some(n),
                Err((pos, msg)) => errors.push(None, f, pos, msg),
            },
            "on" => parse_on(value, &mut def, &mut errors),
            "types" => parse_types(value, &mut def, &mut errors),
            "inputs" => inputs_node = Some(value),
            "defaults" => parse_defaults(value, &mut def, &mut defaults, &mut errors),
            "tasks" => tasks_node = Some(value),
            other => unknown_field(other, other, WORKFLOW_FIELDS, None, key.pos, &mut errors),
        }
    }
    if !has_name {
        errors.push(
            None,
            Some("name"),
            root.pos,
            "missing `name`: add e.g. `name: nightly-etl` at the top",
        );
    }

    let mut drafts = Vec::new();
    match tasks_node.map(|n| (n, &n.kind)) {
        None => errors.push(
            None,
            Some("tasks"),
            root.pos,
            "missing `tasks`: add a list of tasks",
        ),
        Some((node, Kind::Seq(items))) => {
            if items.is_empty() {
                errors.push(
                    None,
                    Some("tasks"),
                    node.pos,
                    "`tasks` is empty; add at least one task",
                );
            } else if items.len() > opts.limits.max_tasks {
                errors.push(
                    None,
                    Some("tasks"),
                    node.pos,
                    format!(
                        "{} tasks is more than the limit of {}; split the workflow (the server's --max-tasks)",
                        items.len(),
                        opts.limits.max_tasks
                    ),
                );
            } else {
                for item in items {
                    if let Some(draft) =
                        task::parse_task(item, &defaults, opts.base_dir, &mut errors)
                    {
                        drafts.push(draft);
                    }
                }
            }
        }
        Some((node, _)) => errors.push(
            None,
            Some("tasks"),
            node.pos,
            format!("expected a list of tasks, found {}", node.describe()),
        ),
    }

    // After `types`, wherever the YAML lists them: input types may `$ref` one.
    if let Some(node) = inputs_node {
        parse_inputs(node, &mut def, &mut errors);
    }
    checks::check_tasks(&drafts, &def, opts, &mut errors);
    if drafts.iter().any(|d| d.used_base_dir) {
        def.base_dir = opts.base_dir.map(str::to_owned);
    }
    if !errors.is_empty() {
        let mut list = errors.list;
        // Stable: errors on one line keep the order they were found in.
        list.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
        return Err(ValidationErrors(list));
    }
    def.tasks = drafts
        .into_iter()
        .map(|d| d.def)
        .collect::<Vec<TaskDefinition>>();
    Ok(def)
}

/// The `file` and `config_file` of every task, without repeats, in task order:
/// what the CLI must read and send along with the YAML.
pub fn referenced_files(def: &WorkflowDefinition) -> Vec<String> {
    let mut seen = BTreeSet::new();
    def.tasks
        .iter()
        .flat_map(|t| [&t.file, &t.config_file])
        .flatten()
        .filter(|f| seen.insert(f.as_str()))
        .cloned()
        .collect()
}

/// Parses a cron expression: standard 5 fields (minute hour day-of-month month
/// day-of-week, with Sunday as 0 or 7), or 6 with seconds first (read as the
/// `cron` crate does, with Sunday as 1).
pub fn cron_schedule(expr: &str) -> Result<cron::Schedule, String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let normalized = match fields.as_slice() {
        [minute, hour, dom, month, dow] => {
            let dow = unix_day_of_week(dow)?;
            format!("0 {minute} {hour} {dom} {month} {dow}")
        }
        [_, _, _, _, _, _] => fields.join(" "),
        _ => {
            return Err(format!(
                "cron expression `{expr}` has {} field(s); write 5 (minute hour day-of-month month \
                 day-of-week, e.g. `0 2 * * *`) or 6 with seconds first",
                fields.len()
            ));
        }
    };
    normalized.parse::<cron::Schedule>().map_err(|e| {
        // The crate's message repeats the expression with a caret on lines
        // of its own; keep only its last line so each error stays one line.
        let text = e.to_string();
        let last = text
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("");
        let mut chars = last.chars();
        let reason: String = match chars.next() {
            Some(first) => first.to_lowercase().chain(chars).collect(),
            None => "not understood".to_owned(),
        };
        format!("invalid cron expression `{expr}`: {reason}")
    })
}

/// Rewrites a standard day-of-week field (0-7, Sunday = 0 or 7) into the
/// `cron` crate's numbering (1-7, Sunday = 1). Names and `*` are the same in
/// both; `*/n` too, since both count from Sunday.
fn unix_day_of_week(field: &str) -> Result<String, String> {
    let bad = || {
        format!("invalid day of week `{field}`; use 0-7 (0 and 7 are Sunday) or names like `mon`")
    };
    let mut out: Vec<String> = Vec::new();
    for token in field.split(',') {
        if token.starts_with('*') || !token.chars().any(|c| c.is_ascii_digit()) {
            out.push(token.to_owned());
            continue;
        }
        if token.chars().any(|c| c.is_ascii_alphabetic()) {
            return Err(bad());
        }
        let (range, step) = match token.split_once('/') {
            Some((range, step)) => (range, Some(step.parse::<u32>().map_err(|_| bad())?)),
            None => (token, None),
        };
        let step = step.unwrap_or(1);
        if step == 0 {
            return Err(bad());
        }
        let number = |s: &str| s.parse::<u32>().ok().filter(|n| *n <= 7).ok_or_else(bad);
        let (start, end) = match range.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None if token.contains('/') => (number(range)?, 6),
            None => (number(range)?, number(range)?),
        };
        if start > end {
            return Err(bad());
        }
        for day in (start..=end).step_by(step as usize) {
            let mapped = (day % 7 + 1).to_string();
            if !out.contains(&mapped) {
                out.push(mapped);
            }
        }
    }
    Ok(out.join(","))
}

/// The top-level field names of a workflow, for the schema's completeness test.
pub fn workflow_fields() -> &'static [&'static str] {
    WORKFLOW_FIELDS
}

/// The field names a task may have, for the schema's completeness test.
pub fn task_fields() -> &'static [&'static str] {
    task::TASK_FIELDS
}

/// The field names `defaults:` may set, for the schema's completeness test.
pub fn default_fields() -> &'static [&'static str] {
    DEFAULT_FIELDS
}

pub use task::{MAX_ARG_BYTES, MAX_COMMAND_ARGS, resolve_program};

/// A YAML document as JSON, for the schema tests.
#[cfg(test)]
pub(crate) fn node_json(yaml: &str) -> serde_json::Value {
    node::load(yaml, &ParseLimits::default())
        .ok()
        .and_then(|n| n.to_json().ok())
        .unwrap_or_default()
}

const ON_FIELDS: &[&str] = &["event", "filter", "webhook"];

/// `on: {event: NAME, filter: {PATH: VALUE}, webhook: {secret: NAME}}`:
/// what else starts runs (see [`crate::events`]).
fn parse_on(node: &Node, def: &mut WorkflowDefinition, errors: &mut Errors<'_>) {
    let Kind::Map(entries) = &node.kind else {
        errors.push(
            None,
            Some("on"),
            node.pos,
            format!(
                "expected a mapping such as `{{event: order.created}}` or `{{webhook: {{secret: NAME}}}}`, found {}",
                node.describe()
            ),
        );
        return;
    };
    let mut filter_pos = None;
    for (key, value) in entries {
        let Some(field) = key_name(key, None, errors) else {
            continue;
        };
        let label = format!("on.{field}");
        let f = Some(label.as_str());
        match field.as_str() {
            "event" => match text(value).and_then(|name| {
                crate::events::check_name(&name)
                    .map(|()| name)
                    .map_err(|m| (value.pos, m))
            }) {
                Ok(name) => def.on.event = Some(name),
                Err((pos, msg)) => errors.push(None, f, pos, msg),
            },
            "filter" => {
                filter_pos = Some(value.pos);
                let Kind::Map(fields) = &value.kind else {
                    errors.push(
                        None,
                        f,
                        value.pos,
                        format!(
                            "expected a mapping of field paths to values, e.g. `{{region: eu}}`, found {}",
                            value.describe()
                        ),
                    );
                    continue;
                };
                if fields.len() > crate::events::MAX_FILTER_FIELDS {
                    errors.push(
                        None,
                        f,
                        value.pos,
                        format!("at most {} fields", crate::events::MAX_FILTER_FIELDS),
                    );
                    continue;
                }
                for (k, v) in fields {
                    let Some(path) = k.key_text() else {
                        errors.push(None, f, k.pos, "field paths must be text");
                        continue;
                    };
                    if let Err(msg) = crate::events::check_filter_path(&path) {
                        errors.push(None, f, k.pos, msg);
                        continue;
                    }
                    match v.to_json() {
                        Ok(json) => {
                            def.on.filter.insert(path, json);
                        }
                        Err((pos, msg)) => errors.push(None, f, pos, msg),
                    }
                }
            }
            "webhook" => {
                let secret = match &value.kind {
                    Kind::Map(inner) => match inner.as_slice() {
                        [(k, v)] if k.as_str() == Some("secret") => text(v),
                        _ => Err((
                            value.pos,
                            "expected `{secret: NAME}`: the name of the server secret calls are signed with".to_owned(),
                        )),
                    },
                    _ => Err((
                        value.pos,
                        format!(
                            "expected `{{secret: NAME}}` (a secret's name, never its value), found {}",
                            value.describe()
                        ),
                    )),
                };
                match secret.and_then(|name| {
                    crate::events::check_secret_name(&name)
                        .map(|()| name)
                        .map_err(|m| (value.pos, m))
                }) {
                    Ok(name) => def.on.webhook_secret = Some(name),
                    Err((pos, msg)) => errors.push(None, f, pos, msg),
                }
            }
            other => unknown_field(other, &label, ON_FIELDS, None, key.pos, errors),
        }
    }
    if let Some(pos) = filter_pos
        && def.on.event.is_none()
    {
        errors.push(
            None,
            Some("on.filter"),
            pos,
            "a filter needs `event:`: it selects among the events of that name",
        );
    }
}

/// Reads a mapping key, which must be text.
pub(crate) fn key_name(key: &Node, task: Option<&str>, errors: &mut Errors<'_>) -> Option<String> {
    match &key.kind {
        Kind::Str(s) => Some(s.clone()),
        _ => {
            errors.push(
                task,
                None,
                key.pos,
                format!("expected a field name, found {}", key.describe()),
            );
            None
        }
    }
}

/// Reports an unknown field, suggesting the closest known one. `label` is
/// the field as shown in the error (`resources.memroy` for `memroy`).
pub(crate) fn unknown_field(
    field: &str,
    label: &str,
    known: &[&'static str],
    task: Option<&str>,
    pos: Pos,
    errors: &mut Errors<'_>,
) {
    let message = match suggest::closest(field, known.iter().copied()) {
        Some(close) => format!("unknown field (did you mean `{close}`?)"),
        None => format!("unknown field; known fields are {}", known.join(", ")),
    };
    errors.push(task, Some(label), pos, message);
}

pub(crate) type FieldResult<T> = Result<T, (Pos, String)>;

/// A string value.
pub(crate) fn text(node: &Node) -> FieldResult<String> {
    node.as_str().map(str::to_owned).ok_or_else(|| {
        (
            node.pos,
            format!("expected text, found {}", node.describe()),
        )
    })
}

/// A whole number that fits in a `u32`.
pub(crate) fn whole(node: &Node) -> FieldResult<u32> {
    let n = match node.kind {
        Kind::Int(i) => u32::try_from(i).ok(),
        Kind::UInt(u) => u32::try_from(u).ok(),
        _ => {
            return Err((
                node.pos,
                format!("expected a whole number, found {}", node.describe()),
            ));
        }
    };
    n.ok_or_else(|| {
        (
            node.pos,
            format!(
                "expected a whole number from 0 to {}, found {}",
                u32::MAX,
                node.describe()
            ),
        )
    })
}

/// A whole number of at least 1.
pub(crate) fn at_least_one(node: &Node) -> FieldResult<u32> {
    match whole(node)? {
        0 => Err((node.pos, "must be at least 1".to_owned())),
        n => Ok(n),
    }
}

/// Checks a workflow or task name.
pub(crate) fn check_name(name: &str, pos: Pos) -> FieldResult<()> {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return Err((pos, "the name is empty".to_owned()));
    };
    let len = name.chars().count();
    if len > MAX_NAME_LEN {
        return Err((
            pos,
            format!("the name is {len} characters long; the limit is {MAX_NAME_LEN}"),
        ));
    }
    let ok_first = first.is_ascii_lowercase() || first.is_ascii_digit();
    let ok_rest =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !(ok_first && ok_rest) {
        return Err((
            pos,
            format!(
                "`{}` is not a valid name; use lowercase letters, digits, `_` and `-`, \
                 starting with a letter or digit",
                node::shorten(name, 40)
            ),
        ));
    }
    Ok(())
}

/// `defaults:`: task fields every task inherits unless it sets its own.
fn parse_defaults(
    value: &Node,
    def: &mut WorkflowDefinition,
    defaults: &mut task::TaskDefaults,
    errors: &mut Errors<'_>,
) {
    let Kind::Map(entries) = &value.kind else {
        errors.push(
            None,
            Some("defaults"),
            value.pos,
            format!(
                "expected a mapping of task fields to default values (e.g. `python: .venv/bin/python`), found {}",
                value.describe()
            ),
        );
        return;
    };
    for (key, node) in entries {
        let Some(field) = key_name(key, None, errors) else {
            continue;
        };
        let label = format!("defaults.{field}");
        match field.as_str() {
            "python" => match text(node) {
                Ok(path) if !path.trim().is_empty() && !path.contains('\0') => {
                    defaults.python = Some((path, node.pos));
                }
                Ok(_) => errors.push(
                    None,
                    Some(&label),
                    node.pos,
                    "expected the path or name of a Python interpreter",
                ),
                Err((pos, msg)) => errors.push(None, Some(&label), pos, msg),
            },
            "executor" => match task::executor(node) {
                Ok(e) => defaults.executor = Some(e),
                Err((pos, msg)) => errors.push(None, Some(&label), pos, msg),
            },
            "image" => match task::image(node) {
                Ok(i) => defaults.image = Some(i),
                Err((pos, msg)) => errors.push(None, Some(&label), pos, msg),
            },
            "resources" => {
                let mut resources = Resources::default();
                task::resources(node, &mut resources, None, &label, errors);
                defaults.resources = resources;
            }
            other => {
                unknown_field(other, &label, DEFAULT_FIELDS, None, key.pos, errors);
                continue;
            }
        }
        if let Ok(json) = node.to_json() {
            def.defaults.insert(field, json);
        }
    }
}

/// `inputs:`: the run input's fields, each a JSON-Schema-style type with an
/// optional `default` and `description`.
fn parse_inputs(value: &Node, def: &mut WorkflowDefinition, errors: &mut Errors<'_>) {
    let Kind::Map(entries) = &value.kind else {
        errors.push(
            None,
            Some("inputs"),
            value.pos,
            format!(
                "expected a mapping of input names to types, e.g. `date: {{type: string, default: \"2026-11-26\"}}`, found {}",
                value.describe()
            ),
        );
        return;
    };
    let mut inputs = Vec::with_capacity(entries.len());
    for (key, node) in entries {
        let Some(name) = key_name(key, None, errors) else {
            continue;
        };
        let label = format!("inputs.{name}");
        if let Err(message) = crate::inputs::check_input_name(&name) {
            errors.push(None, Some(&label), key.pos, message);
            continue;
        }
        let Kind::Map(fields) = &node.kind else {
            errors.push(
                None,
                Some(&label),
                node.pos,
                format!(
                    "expected a JSON-Schema-style mapping such as `{{type: string}}`, found {}",
                    node.describe()
                ),
            );
            continue;
        };
        let mut schema = serde_json::Map::new();
        let mut default = None;
        let mut description = None;
        let mut ok = true;
        for (k, v) in fields {
            let Some(keyword) = key_name(k, None, errors) else {
                ok = false;
                continue;
            };
            let json = match v.to_json() {
                Ok(json) => json,
                Err((pos, msg)) => {
                    errors.push(None, Some(&label), pos, msg);
                    ok = false;
                    continue;
                }
            };
            match keyword.as_str() {
                "default" => default = Some((json, v.pos)),
                "description" => match json {
                    serde_json::Value::String(text) => description = Some(text),
                    _ => {
                        errors.push(
                            None,
                            Some(&label),
                            v.pos,
                            format!("`description` must be text, found {}", v.describe()),
                        );
                        ok = false;
                    }
                },
                _ => {
                    schema.insert(keyword, json);
                }
            }
        }
        let schema = serde_json::Value::Object(schema);
        for e in crate::types::check_schema(&name, &schema, &def.types) {
            let pos = pointer_pos(node, &e.path, e.keyword.as_deref());
            let message = if e.path.is_empty() {
                e.message
            } else {
                format!("at {}: {}", e.path, e.message)
            };
            errors.push(None, Some(&label), pos, message);
            ok = false;
        }
        if ok
            && let Some((value, pos)) = &default
            && let Err(violations) = crate::types::validate_schema(value, &schema, &def.types)
        {
            let shown: Vec<String> = violations
                .iter()
                .take(3)
                .map(|v| {
                    if v.path.is_empty() {
                        v.message.clone()
                    } else {
                        v.to_string()
                    }
                })
                .collect();
            errors.push(
                None,
                Some(&format!("{label}.default")),
                *pos,
                format!(
                    "the default does not match the input's type: {}",
                    shown.join("; ")
                ),
            );
        }
        if def.schedule.is_some() && default.is_none() {
            errors.push(
                None,
                Some(&label),
                key.pos,
                format!(
                    "scheduled runs get no input but `{}`, so every declared input needs a `default`; add one to `{name}`",
                    crate::inputs::SCHEDULED_FOR
                ),
            );
        }
        inputs.push(crate::model::InputDefinition {
            name,
            schema,
            required: default.is_none(),
            default: default.and_then(|(v, _)| (!v.is_null()).then_some(v)),
            description,
        });
    }
    def.inputs = Some(inputs);
}

fn parse_types(value: &Node, def: &mut WorkflowDefinition, errors: &mut Errors<'_>) {
    let Kind::Map(entries) = &value.kind else {
        errors.push(
            None,
            Some("types"),
            value.pos,
            format!(
                "expected a mapping of type names to schemas, found {}",
                value.describe()
            ),
        );
        return;
    };
    let mut nodes = std::collections::BTreeMap::new();
    for (key, schema) in entries {
        let Some(name) = key_name(key, None, errors) else {
            continue;
        };
        if !matches!(schema.kind, Kind::Map(_)) {
            errors.push(
                None,
                Some("types"),
                schema.pos,
                format!(
                    "type `{name}` must be a JSON-Schema-style mapping, found {}",
                    schema.describe()
                ),
            );
            continue;
        }
        match schema.to_json() {
            Ok(json) => {
                nodes.insert(name.clone(), schema);
                def.types.insert(name, json);
            }
            Err((pos, msg)) => errors.push(None, Some("types"), pos, msg),
        }
    }
    for e in crate::types::check_types(&def.types) {
        let pos = nodes
            .get(&e.type_name)
            .map(|node| pointer_pos(node, &e.path, e.keyword.as_deref()))
            .unwrap_or(value.pos);
        let message = if e.path.is_empty() {
            e.message
        } else {
            format!("at {}: {}", e.path, e.message)
        };
        errors.push(None, Some(&format!("types.{}", e.type_name)), pos, message);
    }
}

/// Where the JSON pointer `path` (and then `keyword`, a key there) was
/// written below `node`; the deepest position found when the tree ends early.
fn pointer_pos(node: &Node, path: &str, keyword: Option<&str>) -> Pos {
    fn entry<'n>(node: &'n Node, key: &str) -> Option<&'n (Node, Node)> {
        match &node.kind {
            Kind::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.key_text().as_deref() == Some(key)),
            _ => None,
        }
    }
    let mut current = node;
    for segment in path.split('/').skip(1) {
        match entry(current, &crate::types::unescape_pointer(segment)) {
            Some((_, value)) => current = value,
            None => return current.pos,
        }
    }
    // A keyword is shown at its key.
    keyword
        .and_then(|k| entry(current, k))
        .map_or(current.pos, |(key, _)| key.pos)
}
