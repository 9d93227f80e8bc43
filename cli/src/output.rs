//! Everything `ork` prints as data: tables for people, JSON for scripts.
//!
//! Views are pure functions from API messages to a `String`, so they can be
//! snapshot-tested; commands only choose a view and print it to stdout.

use std::fmt::Write as _;
use std::io::IsTerminal as _;

use chrono::{DateTime, Utc};
use ork_proto::v1::{
    LogLine, PoolWorker, Run, Schedule, TaskRun, Token, Workflow, WorkflowVersion,
};
use pbjson_types::Timestamp;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Serialize, Serializer};

use crate::error::StdoutClosed;

/// How a read command prints its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// Proto3 JSON, the same shape as the REST API.
    Json,
}

/// `--color`: when to colour output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless NO_COLOR is set (or CLICOLOR_FORCE forces it).
    #[default]
    Auto,
    /// Always, even into a pipe or a file.
    Always,
    /// Never.
    Never,
}

/// Whether to colour what goes to one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    pub color: bool,
}

impl Style {
    /// Plain text, for tests.
    #[cfg(test)]
    pub const PLAIN: Style = Style { color: false };

    /// Whether to colour stdout.
    pub fn for_stdout(choice: ColorChoice) -> Self {
        Self::decide(choice, std::io::stdout().is_terminal(), |name| {
            std::env::var_os(name)
        })
    }

    /// Whether to colour stderr (progress and messages).
    pub fn for_stderr(choice: ColorChoice) -> Self {
        Self::decide(choice, std::io::stderr().is_terminal(), |name| {
            std::env::var_os(name)
        })
    }

    /// `--color always|never` wins; with `auto`, a non-empty `NO_COLOR`
    /// turns colour off (https://no-color.org), then a `CLICOLOR_FORCE`
    /// other than `0` turns it on, then `CLICOLOR=0` off
    /// (https://bixense.com/clicolors), and otherwise a terminal decides.
    pub fn decide(
        choice: ColorChoice,
        is_terminal: bool,
        var: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Self {
        let set = |name: &str| var(name).filter(|v| !v.is_empty());
        let color = match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto if set("NO_COLOR").is_some() => false,
            ColorChoice::Auto if set("CLICOLOR_FORCE").is_some_and(|v| v != "0") => true,
            ColorChoice::Auto if set("CLICOLOR").is_some_and(|v| v == "0") => false,
            ColorChoice::Auto => is_terminal,
        };
        Style { color }
    }

    pub(crate) fn paint(self, text: &str, color: Option<Color>) -> String {
        match color {
            Some(color) if self.color && !text.is_empty() => {
                format!("\x1b[{}m{text}\x1b[0m", color.ansi())
            }
            _ => text.to_owned(),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Color {
    Bold,
    Dim,
    Red,
    Green,
    Yellow,
    Cyan,
}

impl Color {
    fn ansi(self) -> &'static str {
        match self {
            Color::Bold => "1",
            Color::Dim => "2",
            Color::Red => "31",
            Color::Green => "32",
            Color::Yellow => "33",
            Color::Cyan => "36",
        }
    }
}

pub(crate) fn status_color(status: &str) -> Option<Color> {
    match status {
        "success" => Some(Color::Green),
        "failed" => Some(Color::Red),
        "running" | "dispatched" => Some(Color::Cyan),
        "cancelled" | "skipped" => Some(Color::Yellow),
        "pending" => Some(Color::Dim),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Tables

/// One table cell; the colour is applied after padding so that escape codes
/// never count toward a column's width.
struct Cell {
    text: String,
    color: Option<Color>,
}

impl Cell {
    fn status(status: &str) -> Self {
        Cell {
            text: status.to_owned(),
            color: status_color(status),
        }
    }
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Cell { text, color: None }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        Cell {
            text: text.to_owned(),
            color: None,
        }
    }
}

struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    fn new(headers: Vec<&'static str>) -> Self {
        Table {
            headers,
            rows: Vec::new(),
        }
    }

    fn push(&mut self, row: Vec<Cell>) {
        self.rows.push(row);
    }

    fn render(&self, style: Style) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.text.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<Cell> = self
            .headers
            .iter()
            .map(|h| Cell {
                text: (*h).to_owned(),
                color: Some(Color::Bold),
            })
            .collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate().take(columns) {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(&style.paint(&cell.text, cell.color));
                if i + 1 < columns {
                    let pad = widths[i] - cell.text.chars().count();
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `key:  value` lines with the values aligned, for the head of a detail view.
fn key_values(pairs: &[(&str, Cell)], style: Style) -> String {
    let width = pairs.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in pairs {
        let key = format!("{key}:");
        let value = style.paint(&value.text, value.color);
        let _ = writeln!(out, "{}", format!("{key:<width$}  {value}").trim_end());
    }
    out
}

// ---------------------------------------------------------------------------
// Views

/// `ork run status`: the run's summary, then one row per task instance.
pub fn render_run(run: &Run, now: DateTime<Utc>, style: Style) -> String {
    let mut fields = vec![
        ("run", run.id.as_str().into()),
        (
            "workflow",
            format!(
                "{} (version {})",
                run.workflow,
                short_version(&run.workflow_version)
            )
            .into(),
        ),
        ("status", Cell::status(&run.status)),
        ("trigger", run.triggered_by.as_str().into()),
        ("created", time(run.created_at.as_ref()).into()),
        ("started", time(run.started_at.as_ref()).into()),
        ("finished", time(run.finished_at.as_ref()).into()),
        (
            "duration",
            duration(run.started_at.as_ref(), run.finished_at.as_ref(), now).into(),
        ),
    ];
    if !run.labels.is_empty() {
        // Sorted, so the line reads the same every time.
        let labels: std::collections::BTreeMap<_, _> = run.labels.iter().collect();
        let text: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        fields.push(("labels", text.join(" ").into()));
    }
    let mut out = key_values(&fields, style);
    if run.tasks.is_empty() {
        return out;
    }
    out.push('\n');
    let mut table = Table::new(vec![
        "NAME", "STATUS", "ATTEMPT", "DURATION", "OUTPUT", "DETAIL",
    ]);
    for task in &run.tasks {
        table.push(vec![
            task_instance_name(&task.name, task.parallel_index).into(),
            Cell::status(&task.status),
            attempt(task).into(),
            duration(task.started_at.as_ref(), task.finished_at.as_ref(), now).into(),
            task.output
                .as_ref()
                .map(|o| truncate(&compact_json(o), OUTPUT_WIDTH))
                .unwrap_or_default()
                .into(),
            detail(task),
        ]);
    }
    out.push_str(&table.render(style));
    let mut metrics = Table::new(vec!["TASK", "ATTEMPT", "METRICS"]);
    let mut any = false;
    for task in &run.tasks {
        // The latest attempt that recorded something.
        let Some(a) = task.attempts.iter().rev().find(|a| !a.metrics.is_empty()) else {
            continue;
        };
        any = true;
        let mut pairs: Vec<(&String, &f64)> = a.metrics.iter().collect();
        pairs.sort_by(|a, b| a.0.cmp(b.0));
        let text: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        metrics.push(vec![
            task_instance_name(&task.name, task.parallel_index).into(),
            a.attempt.to_string().into(),
            text.join(" ").into(),
        ]);
    }
    if any {
        out.push('\n');
        out.push_str(&metrics.render(style));
    }
    out
}

/// `ork run list` and the recent runs of `ork workflow status`.
pub fn render_run_list(runs: &[Run], now: DateTime<Utc>, style: Style) -> String {
    let mut table = Table::new(vec![
        "ID", "WORKFLOW", "STATUS", "TRIGGER", "CREATED", "DURATION",
    ]);
    for run in runs {
        table.push(vec![
            run.id.as_str().into(),
            run.workflow.as_str().into(),
            Cell::status(&run.status),
            run.triggered_by.as_str().into(),
            time(run.created_at.as_ref()).into(),
            duration(run.started_at.as_ref(), run.finished_at.as_ref(), now).into(),
        ]);
    }
    table.render(style)
}

/// `ork schedule list`: the next fires in UTC, comma-separated.
pub fn render_schedule_list(schedules: &[Schedule], style: Style) -> String {
    let mut table = Table::new(vec![
        "WORKFLOW",
        "CRON",
        "TIMEZONE",
        "STATE",
        "NEXT FIRES",
        "LAST FIRE",
    ]);
    for s in schedules {
        let next: Vec<String> = s.next_fires.iter().map(|t| time(Some(t))).collect();
        table.push(vec![
            s.workflow.as_str().into(),
            s.cron.as_str().into(),
            s.timezone.as_str().into(),
            Cell {
                text: if s.paused { "paused" } else { "active" }.to_owned(),
                color: Some(if s.paused {
                    Color::Yellow
                } else {
                    Color::Green
                }),
            },
            if next.is_empty() {
                "-".to_owned()
            } else {
                next.join(", ")
            }
            .into(),
            time(s.last_fire.as_ref()).into(),
        ]);
    }
    table.render(style)
}

/// `ork workflow versions`: newest first, the current one marked.
pub fn render_version_list(versions: &[WorkflowVersion], style: Style) -> String {
    let mut table = Table::new(vec!["VERSION", "DEPLOYED", "CURRENT", "MESSAGE"]);
    for v in versions {
        // One line per version: the message's first line.
        let message = v.message.lines().next().unwrap_or("");
        table.push(vec![
            short_version(&v.version).into(),
            time(v.created_at.as_ref()).into(),
            Cell {
                text: if v.current { "*" } else { "" }.to_owned(),
                color: v.current.then_some(Color::Green),
            },
            or_dash(message).into(),
        ]);
    }
    table.render(style)
}

/// `ork workflow list`.
pub fn render_workflow_list(workflows: &[Workflow], style: Style) -> String {
    let mut table = Table::new(vec!["NAME", "VERSION", "TASKS", "SCHEDULE", "UPDATED"]);
    for wf in workflows {
        table.push(vec![
            wf.name.as_str().into(),
            short_version(&wf.version).into(),
            wf.tasks.len().to_string().into(),
            or_dash(&wf.schedule).into(),
            time(wf.updated_at.as_ref()).into(),
        ]);
    }
    table.render(style)
}

/// Whether a token works at `now`: `revoked`, `expired` or `active`.
pub fn token_state(token: &Token, now: DateTime<Utc>) -> &'static str {
    if token.revoked_at.is_some() {
        "revoked"
    } else if token
        .expires_at
        .as_ref()
        .and_then(to_chrono)
        .is_some_and(|at| at <= now)
    {
        "expired"
    } else {
        "active"
    }
}

/// `ork token list`.
pub fn render_token_list(tokens: &[Token], now: DateTime<Utc>, style: Style) -> String {
    let mut table = Table::new(vec![
        "NAME",
        "ROLE",
        "STATE",
        "CREATED",
        "EXPIRES",
        "CREATED BY",
        "ID",
    ]);
    for token in tokens {
        let state = token_state(token, now);
        table.push(vec![
            token.name.as_str().into(),
            token.role.as_str().into(),
            Cell {
                text: state.to_owned(),
                color: match state {
                    "active" => Some(Color::Green),
                    _ => Some(Color::Dim),
                },
            },
            time(token.created_at.as_ref()).into(),
            time(token.expires_at.as_ref()).into(),
            or_dash(&token.created_by).into(),
            token.id.as_str().into(),
        ]);
    }
    table.render(style)
}

/// `ork workflow status`: the newest version, its tasks and its recent runs.
pub fn render_workflow(wf: &Workflow, runs: &[Run], now: DateTime<Utc>, style: Style) -> String {
    let mut out = key_values(
        &[
            ("workflow", wf.name.as_str().into()),
            ("version", wf.version.as_str().into()),
            ("schedule", or_dash(&wf.schedule).into()),
            ("created", time(wf.created_at.as_ref()).into()),
            ("updated", time(wf.updated_at.as_ref()).into()),
        ],
        style,
    );
    out.push('\n');
    let mut table = Table::new(vec![
        "TASK",
        "EXECUTOR",
        "DEPENDS ON",
        "PARALLEL",
        "RETRIES",
        "TIMEOUT",
        "FILE",
    ]);
    for task in &wf.tasks {
        table.push(vec![
            task.name.as_str().into(),
            task.executor.as_str().into(),
            or_dash(&task.depends_on.join(", ")).into(),
            or_dash(&task.parallel).into(),
            task.retries.to_string().into(),
            format!("{}s", task.timeout_seconds).into(),
            or_dash(&task.file).into(),
        ]);
    }
    out.push_str(&table.render(style));
    if !wf.inputs.is_empty() {
        out.push('\n');
        let mut inputs = Table::new(vec!["INPUT", "TYPE", "DEFAULT", "DESCRIPTION"]);
        for input in &wf.inputs {
            let default = match &input.default_value {
                _ if input.required => "(required)".to_owned(),
                Some(v) => truncate(&compact_json(v), OUTPUT_WIDTH),
                None => "null".to_owned(),
            };
            inputs.push(vec![
                input.name.as_str().into(),
                input_type(input.schema.as_ref()).into(),
                default.into(),
                input.description.as_str().into(),
            ]);
        }
        out.push_str(&inputs.render(style));
    }
    out.push('\n');
    if runs.is_empty() {
        out.push_str("no runs yet\n");
    } else {
        out.push_str(&style.paint("recent runs:", Some(Color::Bold)));
        out.push('\n');
        out.push_str(&render_run_list(runs, now, style));
    }
    out
}

/// `ork worker list`: the pool workers attached to the server.
pub fn render_worker_list(workers: &[PoolWorker], now: DateTime<Utc>, style: Style) -> String {
    if workers.is_empty() {
        return "no pool workers are attached\n".to_owned();
    }
    let mut table = Table::new(vec![
        "NAME",
        "HANDLERS",
        "SLOTS",
        "LAST SEEN",
        "ATTACHED",
        "STATE",
    ]);
    for w in workers {
        let seen = w
            .last_seen_at
            .as_ref()
            .and_then(to_chrono)
            .map(|t| {
                format!(
                    "{} ago",
                    format_duration((now - t).num_milliseconds().max(0))
                )
            })
            .unwrap_or_else(|| "-".to_owned());
        table.push(vec![
            w.name.as_str().into(),
            w.handlers.join(", ").into(),
            format!("{}/{}", w.slots_in_use, w.slots).into(),
            seen.into(),
            time(w.attached_at.as_ref()).into(),
            if w.draining {
                Cell {
                    text: "draining".to_owned(),
                    color: Some(Color::Yellow),
                }
            } else {
                Cell {
                    text: "serving".to_owned(),
                    color: Some(Color::Green),
                }
            },
        ]);
    }
    table.render(style)
}

/// An input's type in one word or two: `string`, `integer or null`, `$ref day`.
fn input_type(schema: Option<&pbjson_types::Value>) -> String {
    let schema = schema.map(ork_proto::json::from_proto).unwrap_or_default();
    match (
        schema.get("type"),
        schema.get("$ref").and_then(|r| r.as_str()),
    ) {
        (Some(serde_json::Value::String(t)), _) => t.clone(),
        (Some(serde_json::Value::Array(types)), _) => types
            .iter()
            .filter_map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(" or "),
        (None, Some(reference)) => reference.trim_start_matches("#/types/").to_owned(),
        _ => "any".to_owned(),
    }
}

/// One log line as `task[i] #attempt | line`, or the bare line when the
/// user already picked one task that has a single instance.
pub fn render_log_line(line: &LogLine, bare: bool, style: Style) -> String {
    if bare {
        return line.line.clone();
    }
    let prefix = format!(
        "{} #{} |",
        task_instance_name(&line.task, line.parallel_index),
        line.attempt
    );
    let color = if line.stream == "stderr" {
        Color::Yellow
    } else {
        Color::Dim
    };
    format!("{} {}", style.paint(&prefix, Some(color)), line.line)
}

const OUTPUT_WIDTH: usize = 60;

/// The header line of a Python traceback.
const TRACEBACK: &str = "Traceback (most recent call last):";

/// The line of an error that says what went wrong: its first line, unless
/// that is only a traceback's header (a script that let an exception
/// escape, its stderr reported), in which case the exception line at the
/// end of the (last) traceback, after what preceded the header on its line
/// (`exited with code 1: ValueError: bad input`).
pub fn error_headline(error: &str) -> String {
    let first = error.lines().next().unwrap_or_default().trim_end();
    let Some(prefix) = first.strip_suffix(TRACEBACK) else {
        return first.to_owned();
    };
    let lines: Vec<&str> = error.lines().collect();
    let last_header = lines
        .iter()
        .rposition(|l| l.trim_end().ends_with(TRACEBACK))
        .unwrap_or(0);
    // After the header come the frames, indented; the exception is the
    // first line that is not.
    let exception = lines[last_header + 1..]
        .iter()
        .find(|l| !l.trim().is_empty() && !l.starts_with(char::is_whitespace));
    match exception {
        Some(line) => format!("{prefix}{}", line.trim_end()),
        None => first.to_owned(),
    }
}

pub(crate) fn task_instance_name(name: &str, parallel_index: Option<u32>) -> String {
    match parallel_index {
        Some(i) => format!("{name}[{i}]"),
        None => name.to_owned(),
    }
}

/// `2/4` once retries are possible, so a flaky task shows how close it is
/// to giving up; `-` before the first dispatch.
fn attempt(task: &TaskRun) -> String {
    match (task.attempt, task.max_retries) {
        (0, _) => "-".to_owned(),
        (n, 0) => n.to_string(),
        (n, retries) => format!("{n}/{}", retries + 1),
    }
}

/// The error's headline for a task that failed, why it waits for a pending
/// one.
fn detail(task: &TaskRun) -> Cell {
    if !task.error.is_empty() {
        let headline = error_headline(&task.error);
        let text = if task.error.trim_end().lines().nth(1).is_some() {
            format!("{headline} …")
        } else {
            headline
        };
        return Cell {
            text,
            color: Some(Color::Red),
        };
    }
    if task.status == "pending" && !task.pending_reason.is_empty() {
        return Cell {
            text: task.pending_reason.clone(),
            color: Some(Color::Dim),
        };
    }
    "".into()
}

fn compact_json(value: &pbjson_types::Value) -> String {
    ork_proto::json::from_proto(value).to_string()
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

/// Versions are content hashes; like git, the first 12 characters identify
/// one in practice and keep tables narrow. JSON keeps the full value.
fn short_version(version: &str) -> &str {
    version.get(..12).unwrap_or(version)
}

fn or_dash(text: &str) -> &str {
    if text.is_empty() { "-" } else { text }
}

pub(crate) fn to_chrono(ts: &Timestamp) -> Option<DateTime<Utc>> {
    ork_proto::time::from_proto(ts)
}

fn time(ts: Option<&Timestamp>) -> String {
    ts.and_then(to_chrono)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".to_owned())
}

/// From start to finish, or to `now` while still running.
fn duration(start: Option<&Timestamp>, end: Option<&Timestamp>, now: DateTime<Utc>) -> String {
    let Some(start) = start.and_then(to_chrono) else {
        return "-".to_owned();
    };
    let end = end.and_then(to_chrono).unwrap_or(now);
    format_duration((end - start).num_milliseconds().max(0))
}

pub(crate) fn format_duration(ms: i64) -> String {
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60)
    }
}

// ---------------------------------------------------------------------------
// JSON

/// Writes data to stdout. A reader that went away (`ork run list | head`)
/// becomes [`StdoutClosed`], which ends `ork` quietly instead of panicking
/// as `println!` would.
pub fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(StdoutClosed))
        }
        other => Ok(other?),
    }
}

/// [`emit`] plus a newline.
pub fn emit_line(text: &str) -> anyhow::Result<()> {
    emit(&format!("{text}\n"))
}

/// Prints `value` as pretty proto3 JSON on stdout.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    emit_line(&to_json_pretty(value)?)
}

/// Pretty proto3 JSON: fields in proto order, integral numbers as integers,
/// and the keys of `input`/`output` values sorted.
pub fn to_json_pretty<T: Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(&normalized(value)?)?)
}

/// One-line JSON, for streams such as `ork run logs --output json`.
pub fn to_json_line<T: Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string(&normalized(value)?)?)
}

/// pbjson writes every `google.protobuf.Value` number as a float (`3.0`)
/// and the keys of its structs in hash order. Going through `serde_json::Value`
/// would fix both but sort the message's own fields too, so this re-reads the
/// JSON into a tree that keeps field order, then fixes just those two things.
fn normalized<T: Serialize>(value: &T) -> anyhow::Result<Json> {
    let mut tree: Json = serde_json::from_str(&serde_json::to_string(value)?)?;
    tree.sort_user_values(false);
    Ok(tree)
}

#[derive(Debug)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// Sorts object keys inside `input`, `output`, `schema` and
    /// `default_value` fields: those are the only `google.protobuf.Struct`s
    /// (hash maps) our messages carry.
    fn sort_user_values(&mut self, inside_value: bool) {
        match self {
            Json::Array(items) => items
                .iter_mut()
                .for_each(|i| i.sort_user_values(inside_value)),
            Json::Object(entries) => {
                if inside_value {
                    entries.sort_by(|a, b| a.0.cmp(&b.0));
                }
                for (key, child) in entries {
                    let user_value = matches!(
                        key.as_str(),
                        "input" | "output" | "schema" | "default_value"
                    );
                    child.sort_user_values(inside_value || user_value);
                }
            }
            _ => {}
        }
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self {
            Json::Null => ser.serialize_unit(),
            Json::Bool(b) => ser.serialize_bool(*b),
            Json::Int(i) => ser.serialize_i64(*i),
            Json::UInt(u) => ser.serialize_u64(*u),
            Json::Float(f) => ork_proto::json::number(*f).serialize(ser),
            Json::Str(s) => ser.serialize_str(s),
            Json::Array(items) => {
                let mut seq = ser.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Json::Object(entries) => {
                let mut map = ser.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct JsonVisitor;
        impl<'de> Visitor<'de> for JsonVisitor {
            type Value = Json;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
                Ok(Json::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
                Ok(Json::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
                Ok(Json::UInt(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
                Ok(Json::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
                Ok(Json::Str(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
                Ok(Json::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Json::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Json::Object(entries))
            }
        }
        de.deserialize_any(JsonVisitor)
    }
}

#[cfg(test)]
mod tests;
