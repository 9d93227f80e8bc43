//! Parsing one task mapping into a [`TaskDefinition`], keeping the positions
//! that the cross-task checks need for their messages.

use std::collections::BTreeMap;

use super::{
    Errors, FieldResult, Kind, Node, Pos, at_least_one, check_name, key_name, node, text,
    unknown_field, whole,
};
use crate::model::{
    ALWAYS_PULLING_EXECUTORS, CONTAINER_EXECUTORS, DEFAULT_EXECUTOR, DEFAULT_TIMEOUT_SECONDS,
    EnvValue, FieldRef, ImagePullPolicy, KNOWN_EXECUTORS, OnFailure, Parallelism, Resources,
    RetryBackoff, TaskDefinition, WORKERS_EXECUTOR,
};
use crate::quantity;

pub(crate) const TASK_FIELDS: &[&str] = &[
    "name",
    "executor",
    "file",
    "command",
    "python",
    "handler",
    "config_file",
    "input",
    "depends_on",
    "timeout_seconds",
    "retries",
    "retry_delay_seconds",
    "retry_backoff",
    "retry_max_delay_seconds",
    "parallel",
    "concurrency",
    "resources",
    "image",
    "image_pull_policy",
    "env",
    "on_failure",
    "output_type",
];

/// Longest image reference accepted (Docker's own limit is 255 for the name
/// part; a tag and digest add to it).
const MAX_IMAGE_LEN: usize = 512;
const RESOURCE_FIELDS: &[&str] = &["cpu", "memory", "gpu"];

/// Most arguments of one `command`.
pub const MAX_COMMAND_ARGS: usize = 256;
/// Longest `python` path or `command` argument, in bytes.
pub const MAX_ARG_BYTES: usize = 4096;

/// The workflow's `defaults:` that tasks inherit, each with where it was
/// written (for errors that arise once merged).
#[derive(Debug, Default, Clone)]
pub(crate) struct TaskDefaults {
    pub python: Option<(String, Pos)>,
    pub executor: Option<String>,
    pub image: Option<String>,
    pub resources: Resources,
}

/// A parsed task and where its parts were written.
#[derive(Debug)]
pub(crate) struct TaskDraft<'n> {
    pub def: TaskDefinition,
    /// False when the task has no valid name; it is then left out of the
    /// cross-task checks, which need one.
    pub has_name: bool,
    pub name_pos: Pos,
    /// Position of each `depends_on` entry, parallel to `def.depends_on`.
    pub depends_pos: Vec<Pos>,
    pub input: Option<&'n Node>,
    pub parallel_pos: Pos,
    pub file_pos: Pos,
    pub config_file_pos: Pos,
    pub output_type_pos: Pos,
    /// True when a relative `python` or `command` path was resolved against
    /// the workflow's folder.
    pub used_base_dir: bool,
}

/// Parses one entry of `tasks`, reporting problems into `errors`.
pub(crate) fn parse_task<'n>(
    node: &'n Node,
    defaults: &TaskDefaults,
    base_dir: Option<&str>,
    errors: &mut Errors<'_>,
) -> Option<TaskDraft<'n>> {
    let Kind::Map(entries) = &node.kind else {
        errors.push(
            None,
            Some("tasks"),
            node.pos,
            format!(
                "expected a task mapping with at least `name`, found {}",
                node.describe()
            ),
        );
        return None;
    };

    // The name first, so that every other error can say which task it is about.
    let name_entry = entries.iter().find(|(k, _)| k.as_str() == Some("name"));
    let (name, has_name, name_pos) = match name_entry {
        Some((_, value)) => match text(value).and_then(|s| check_name(&s, value.pos).map(|()| s)) {
            Ok(name) => (name, true, value.pos),
            Err((pos, msg)) => {
                errors.push(None, Some("name"), pos, msg);
                (String::new(), false, value.pos)
            }
        },
        None => {
            errors.push(
                None,
                Some("name"),
                node.pos,
                "the task has no `name`; add e.g. `name: extract`",
            );
            (String::new(), false, node.pos)
        }
    };
    let task = has_name.then_some(name.as_str());

    let mut def = TaskDefinition {
        name: name.clone(),
        executor: defaults
            .executor
            .clone()
            .unwrap_or_else(|| DEFAULT_EXECUTOR.to_owned()),
        handler: None,
        file: None,
        command: None,
        python: None,
        config_file: None,
        input: serde_json::Value::Null,
        depends_on: Vec::new(),
        timeout_seconds: DEFAULT_TIMEOUT_SECONDS,
        retries: 0,
        retry_delay_seconds: 0,
        retry_backoff: RetryBackoff::Fixed,
        retry_max_delay_seconds: None,
        parallel: None,
        concurrency: None,
        resources: Resources::default(),
        image: None,
        image_pull_policy: ImagePullPolicy::default(),
        env: BTreeMap::new(),
        on_failure: OnFailure::Skip,
        output_type: None,
    };
    let mut draft = TaskDraft {
        def: def.clone(),
        has_name,
        name_pos,
        depends_pos: Vec::new(),
        input: None,
        parallel_pos: Pos::default(),
        file_pos: Pos::default(),
        config_file_pos: Pos::default(),
        output_type_pos: Pos::default(),
        used_base_dir: false,
    };
    let mut executor_pos = node.pos;
    let mut command_pos = Pos::default();
    let mut python_pos = Pos::default();
    let mut handler_pos = Pos::default();
    let mut retry_max_pos = node.pos;
    let mut image_pos = Pos::default();
    let mut pull_policy_pos = Pos::default();

    for (key, value) in entries {
        let Some(field) = key_name(key, task, errors) else {
            continue;
        };
        if matches!(value.kind, Kind::Null) {
            continue;
        }
        let mut report = |result: FieldResult<()>| {
            if let Err((pos, msg)) = result {
                errors.push(task, Some(&field), pos, msg);
            }
        };
        match field.as_str() {
            "name" => {}
            "executor" => {
                executor_pos = value.pos;
                report(executor(value).map(|e| def.executor = e));
            }
            "image" => {
                image_pos = value.pos;
                report(image(value).map(|i| def.image = Some(i)));
            }
            "image_pull_policy" => {
                pull_policy_pos = value.pos;
                report(text(value).and_then(|p| {
                    ImagePullPolicy::parse(&p)
                        .map(|p| def.image_pull_policy = p)
                        .ok_or_else(|| {
                            (
                                value.pos,
                                format!(
                                    "unknown policy `{p}`; use `if_not_present` (the default), `always` or `never`"
                                ),
                            )
                        })
                }));
            }
            "file" => {
                draft.file_pos = value.pos;
                report(relative_path(value).map(|p| def.file = Some(p)));
            }
            "command" => {
                command_pos = value.pos;
                report(command(value).map(|c| def.command = Some(c)));
            }
            "python" => {
                python_pos = value.pos;
                report(program_path(value).map(|p| def.python = Some(p)));
            }
            "handler" => {
                handler_pos = value.pos;
                report(text(value).and_then(|h| {
                    let valid = !h.is_empty()
                        && h.len() <= 128
                        && h.chars().all(|c| c.is_ascii_alphanumeric() || "_-.:/".contains(c));
                    if valid {
                        def.handler = Some(h);
                        Ok(())
                    } else {
                        Err((
                            value.pos,
                            format!("`{h}` is not a handler name; use letters, digits and `_-.:/`, as the worker registers it"),
                        ))
                    }
                }));
            }
            "config_file" => {
                draft.config_file_pos = value.pos;
                report(relative_path(value).map(|p| def.config_file = Some(p)));
            }
            "input" => {
                draft.input = Some(value);
                report(value.to_json().map(|v| def.input = v));
            }
            "depends_on" => report(depends_on(value).map(|deps| {
                for (dep, pos) in deps {
                    // A repeated entry adds nothing; keep the first.
                    if !def.depends_on.contains(&dep) {
                        def.depends_on.push(dep);
                        draft.depends_pos.push(pos);
                    }
                }
            })),
            "timeout_seconds" => report(whole(value).and_then(|n| match n {
                0 => Err((
                    value.pos,
                    "must be greater than 0; it is the most seconds one attempt may run".to_owned(),
                )),
                n => {
                    def.timeout_seconds = n;
                    Ok(())
                }
            })),
            "retries" => report(whole(value).map(|n| def.retries = n)),
            "retry_delay_seconds" => report(whole(value).map(|n| def.retry_delay_seconds = n)),
            "retry_backoff" => report(
                text(value)
                    .and_then(|s| match s.as_str() {
                        "fixed" => Ok(RetryBackoff::Fixed),
                        "exponential" => Ok(RetryBackoff::Exponential),
                        _ => Err((
                            value.pos,
                            format!("unknown backoff `{s}`; use `fixed` or `exponential`"),
                        )),
                    })
                    .map(|v| def.retry_backoff = v),
            ),
            "retry_max_delay_seconds" => {
                retry_max_pos = value.pos;
                report(at_least_one(value).map(|n| def.retry_max_delay_seconds = Some(n)));
            }
            "parallel" => {
                draft.parallel_pos = value.pos;
                report(parallel(value).map(|p| def.parallel = Some(p)));
            }
            "concurrency" => report(at_least_one(value).map(|n| def.concurrency = Some(n))),
            "resources" => resources(value, &mut def.resources, task, "resources", errors),
            "env" => env(value, &mut def.env, task, errors),
            "on_failure" => report(
                text(value)
                    .and_then(|s| match s.as_str() {
                        "skip" => Ok(OnFailure::Skip),
                        "run" => Ok(OnFailure::Run),
                        _ => Err((
                            value.pos,
                            format!("unknown value `{s}`; use `skip` or `run`"),
                        )),
                    })
                    .map(|v| def.on_failure = v),
            ),
            "output_type" => {
                draft.output_type_pos = value.pos;
                report(text(value).map(|s| def.output_type = Some(s)));
            }
            other => unknown_field(other, other, TASK_FIELDS, task, key.pos, errors),
        }
    }

    // Defaults fill what the task left unset; the checks below then see the
    // task as it will run.
    def.resources = def.resources.or(&defaults.resources);
    let in_container = CONTAINER_EXECUTORS.contains(&def.executor.as_str());
    if in_container && def.image.is_none() {
        def.image.clone_from(&defaults.image);
    }

    if in_container && def.image.is_none() && image_pos == Pos::default() {
        errors.push(
            task,
            Some("image"),
            executor_pos,
            format!(
                "a `{}` task needs `image`: the container image it runs in, e.g. `image: python:3.12-slim` (or set `defaults: {{image: ...}}`)",
                def.executor
            ),
        );
    }
    if !in_container && def.image.is_some() {
        errors.push(
            task,
            Some("image"),
            image_pos,
            format!(
                "`image` is for container tasks; add `executor:` one of {}, or remove it (this task's executor is `{}`)",
                CONTAINER_EXECUTORS.join(", "),
                def.executor
            ),
        );
    }
    if !in_container && pull_policy_pos != Pos::default() {
        errors.push(
            task,
            Some("image_pull_policy"),
            pull_policy_pos,
            "`image_pull_policy` is for container tasks (`executor: docker` or `kubernetes`); remove it",
        );
    }
    if ALWAYS_PULLING_EXECUTORS.contains(&def.executor.as_str())
        && pull_policy_pos != Pos::default()
    {
        errors.push(
            task,
            Some("image_pull_policy"),
            pull_policy_pos,
            format!(
                "`{}` always pulls the image from its registry; remove `image_pull_policy` (it is for `docker` and `kubernetes` tasks)",
                def.executor
            ),
        );
    }
    if def.executor == WORKERS_EXECUTOR && def.handler.is_none() && handler_pos == Pos::default() {
        errors.push(
            task,
            Some("handler"),
            executor_pos,
            "a `workers` task needs `handler`: the name a pool worker registered its function under",
        );
    }
    if def.executor != WORKERS_EXECUTOR && def.handler.is_some() {
        errors.push(
            task,
            Some("handler"),
            handler_pos,
            "`handler` routes a task to pool workers; add `executor: workers` or remove it",
        );
    }
    if def.executor != WORKERS_EXECUTOR
        && def.file.is_none()
        && draft.file_pos == Pos::default()
        && def.command.is_none()
        && command_pos == Pos::default()
    {
        errors.push(
            task,
            Some("file"),
            executor_pos,
            format!(
                "a {} task needs `file` (a script relative to the workflow file) or \
                 `command` (a program and its arguments, e.g. [\"bash\", \"-c\", \"echo hi\"])",
                def.executor
            ),
        );
    }
    interpreter_rules(
        &mut def,
        defaults,
        &mut Interpreter {
            command_pos,
            python_pos,
            base_dir,
            used_base_dir: &mut draft.used_base_dir,
        },
        task,
        errors,
    );
    if let Some(max) = def.retry_max_delay_seconds
        && max < def.retry_delay_seconds
    {
        errors.push(
            task,
            Some("retry_max_delay_seconds"),
            retry_max_pos,
            format!(
                "must be at least retry_delay_seconds ({}), or the cap would shorten every delay",
                def.retry_delay_seconds
            ),
        );
    }
    draft.def = def;
    Some(draft)
}

/// Where `command` and `python` were written, and what relative paths in
/// them resolve against.
struct Interpreter<'a> {
    command_pos: Pos,
    python_pos: Pos,
    base_dir: Option<&'a str>,
    used_base_dir: &'a mut bool,
}

/// The rules of `command` and `python`: where each applies, the workflow's
/// `python` default merged in, and relative program paths resolved.
fn interpreter_rules(
    def: &mut TaskDefinition,
    defaults: &TaskDefaults,
    at: &mut Interpreter<'_>,
    task: Option<&str>,
    errors: &mut Errors<'_>,
) {
    let is_py = def.file.as_deref().is_some_and(is_python_file);
    if def.executor == WORKERS_EXECUTOR {
        for (field, set, pos) in [
            ("command", def.command.is_some(), at.command_pos),
            ("python", def.python.is_some(), at.python_pos),
        ] {
            if set {
                errors.push(
                    task,
                    Some(field),
                    pos,
                    format!(
                        "a `workers` task is run by the pool worker's `handler`, not by a program on ork's side; remove `{field}`"
                    ),
                );
            }
        }
        return;
    }
    if def.python.is_some() {
        let problem = if def.command.is_some() {
            Some("`command` already names the program to run, so `python` would be ignored; remove one of them".to_owned())
        } else {
            match &def.file {
                None => Some("`python` is the interpreter of a `.py` `file`, and this task has none; use `command` to run a program".to_owned()),
                Some(file) if !is_py => Some(format!(
                    "`python` is the interpreter of `.py` files and `{file}` is not one; use `command` to choose the program that runs it"
                )),
                Some(_) => None,
            }
        };
        if let Some(message) = problem {
            errors.push(task, Some("python"), at.python_pos, message);
        }
    } else if is_py
        && def.command.is_none()
        && let Some((python, pos)) = &defaults.python
    {
        def.python = Some(python.clone());
        at.python_pos = *pos;
    }
    // Only programs started on this side of ork resolve against the
    // workflow's folder; other executors (containers) see paths of their own.
    if def.executor != DEFAULT_EXECUTOR {
        return;
    }
    let mut resolve =
        |field: &str, path: &mut String, pos: Pos| match resolve_program(path, at.base_dir) {
            Ok(Some(resolved)) => {
                *path = resolved;
                *at.used_base_dir = true;
            }
            Ok(None) => {}
            Err(message) => errors.push(task, Some(field), pos, message),
        };
    if let Some(python) = def.python.as_mut() {
        resolve("python", python, at.python_pos);
    }
    if let Some(program) = def.command.as_mut().and_then(|c| c.first_mut()) {
        resolve("command", program, at.command_pos);
    }
}

/// A known executor name.
pub(crate) fn executor(node: &Node) -> FieldResult<String> {
    let e = text(node)?;
    if KNOWN_EXECUTORS.contains(&e.as_str()) {
        Ok(e)
    } else {
        Err((
            node.pos,
            format!(
                "unknown executor `{e}`; known executors: {}",
                KNOWN_EXECUTORS.join(", ")
            ),
        ))
    }
}

/// An image reference: one word, as `docker pull` takes it. The engine
/// checks the rest when it pulls.
pub(crate) fn image(node: &Node) -> FieldResult<String> {
    let i = text(node)?;
    if i.trim().is_empty() {
        return Err((
            node.pos,
            "the image is empty; name one, e.g. `python:3.12-slim`".to_owned(),
        ));
    }
    if i.len() > MAX_IMAGE_LEN {
        return Err((
            node.pos,
            format!(
                "the image reference is {} characters long; the limit is {MAX_IMAGE_LEN}",
                i.len()
            ),
        ));
    }
    if i.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err((
            node.pos,
            format!(
                "`{i}` is not an image reference: it contains spaces; write e.g. `registry.example.com/team/app:1.2`"
            ),
        ));
    }
    Ok(i)
}

/// True for a file that `python` runs: a `.py` extension, any case.
pub(crate) fn is_python_file(name: &str) -> bool {
    std::path::Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("py"))
}

/// A program path as the task's worker will use it: an absolute path or a
/// bare name (looked up on PATH) as written; a relative path with a `/`
/// (`.venv/bin/python`) joined to the folder the workflow was deployed
/// from. `Ok(None)` leaves the path as it is.
pub fn resolve_program(path: &str, base_dir: Option<&str>) -> Result<Option<String>, String> {
    if path.starts_with('/') || !path.contains('/') {
        return Ok(None);
    }
    if path.starts_with('~') {
        return Err(format!(
            "`{path}`: `~` is not expanded; write the absolute path, or a path relative to the workflow file"
        ));
    }
    match base_dir {
        Some(base) if base.starts_with('/') => {
            let relative = path.strip_prefix("./").unwrap_or(path);
            Ok(Some(format!("{}/{relative}", base.trim_end_matches('/'))))
        }
        _ => Err(format!(
            "`{path}` is relative to the workflow file, but this deploy did not say where that file is; \
             deploy with `ork workflow deploy FILE` (which sends its folder as `base_dir`), or write an absolute path"
        )),
    }
}

/// `command: [program, args...]`: a non-empty list of strings.
fn command(node: &Node) -> FieldResult<Vec<String>> {
    let usage = "expected a list of strings: the program and its arguments, e.g. [\"bash\", \"-c\", \"echo hi\"]";
    let Kind::Seq(items) = &node.kind else {
        let hint = match &node.kind {
            Kind::Str(s) => format!(
                "; `command` is not run by a shell, so write each argument separately, e.g. [\"bash\", \"-c\", \"{}\"]",
                node::shorten(s, 40)
            ),
            _ => String::new(),
        };
        return Err((
            node.pos,
            format!("{usage}, found {}{hint}", node.describe()),
        ));
    };
    if items.is_empty() {
        return Err((node.pos, format!("the list is empty; {usage}")));
    }
    if items.len() > MAX_COMMAND_ARGS {
        return Err((
            node.pos,
            format!(
                "{} arguments is more than the limit of {MAX_COMMAND_ARGS}; pass data through `input` instead",
                items.len()
            ),
        ));
    }
    let mut argv = Vec::with_capacity(items.len());
    for item in items {
        let arg = match &item.kind {
            Kind::Str(s) => s.clone(),
            Kind::Int(i) => i.to_string(),
            Kind::UInt(u) => u.to_string(),
            Kind::Float(f) => f.to_string(),
            Kind::Bool(b) => b.to_string(),
            _ => {
                return Err((
                    item.pos,
                    format!("expected a string argument, found {}", item.describe()),
                ));
            }
        };
        check_arg(&arg, item.pos)?;
        argv.push(arg);
    }
    if argv[0].trim().is_empty() {
        return Err((
            items[0].pos,
            "the program (the first element) is empty".to_owned(),
        ));
    }
    Ok(argv)
}

/// `python: PATH`: an interpreter, by name or path.
fn program_path(node: &Node) -> FieldResult<String> {
    let path = text(node)?;
    if path.trim().is_empty() {
        return Err((node.pos, "the path is empty".to_owned()));
    }
    check_arg(&path, node.pos)?;
    Ok(path)
}

fn check_arg(arg: &str, pos: Pos) -> FieldResult<()> {
    if arg.contains('\0') {
        return Err((
            pos,
            "contains a NUL character, which no program argument can hold".to_owned(),
        ));
    }
    if arg.len() > MAX_ARG_BYTES {
        return Err((
            pos,
            format!(
                "is {} bytes long; the limit is {MAX_ARG_BYTES}; pass data through `input` instead",
                arg.len()
            ),
        ));
    }
    Ok(())
}

/// A path inside the workflow's folder: relative, without `..`.
fn relative_path(node: &Node) -> FieldResult<String> {
    let path = text(node)?;
    let bad = |why: &str| Err((node.pos, format!("`{path}` {why}")));
    if path.trim().is_empty() {
        return Err((node.pos, "the path is empty".to_owned()));
    }
    let bytes = path.as_bytes();
    let windows_drive = bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
    if path.starts_with('/') || path.starts_with('\\') || windows_drive {
        return bad("is an absolute path; write it relative to the workflow file");
    }
    if path.split(['/', '\\']).any(|part| part == "..") {
        return bad(
            "leaves the workflow's folder through `..`; move the file next to the workflow",
        );
    }
    Ok(path)
}

fn depends_on(node: &Node) -> FieldResult<Vec<(String, Pos)>> {
    let Kind::Seq(items) = &node.kind else {
        return Err((
            node.pos,
            format!("expected a list of task names, found {}", node.describe()),
        ));
    };
    items
        .iter()
        .map(|item| text(item).map(|s| (s, item.pos)))
        .collect()
}

/// `parallel: 4`, `{count: task.field}` or `{for_each: task.field}`.
fn parallel(node: &Node) -> FieldResult<Parallelism> {
    let usage = "expected a number of instances (e.g. `4`), `{count: task.field}` or `{for_each: task.field}`";
    match &node.kind {
        Kind::Int(_) | Kind::UInt(_) => at_least_one(node).map(Parallelism::Static),
        Kind::Map(entries) => match entries.as_slice() {
            [(key, value)] => {
                let field_ref = field_ref(value)?;
                match key.as_str() {
                    Some("count") => Ok(Parallelism::CountRef(field_ref)),
                    Some("for_each") => Ok(Parallelism::ForEach(field_ref)),
                    _ => Err((
                        key.pos,
                        format!(
                            "{usage}, found key `{}`",
                            key.key_text().unwrap_or_default()
                        ),
                    )),
                }
            }
            _ => Err((
                node.pos,
                format!("{usage}, found a mapping with {} keys", entries.len()),
            )),
        },
        _ => Err((node.pos, format!("{usage}, found {}", node.describe()))),
    }
}

/// `task.field[.sub...]`.
fn field_ref(node: &Node) -> FieldResult<FieldRef> {
    let s = text(node)?;
    let mut parts = s.split('.');
    let task = parts.next().unwrap_or_default().to_owned();
    let path: Vec<String> = parts.map(str::to_owned).collect();
    if task.is_empty() || path.is_empty() || path.iter().any(String::is_empty) {
        return Err((
            node.pos,
            format!(
                "`{s}` is not a reference to an output field; write `task.field`, e.g. `discover.files`"
            ),
        ));
    }
    Ok(FieldRef { task, path })
}

/// `resources: {cpu, memory, gpu}`; `label` is how errors name the field
/// (`resources`, or `defaults.resources`).
pub(crate) fn resources(
    node: &Node,
    out: &mut Resources,
    task: Option<&str>,
    label: &str,
    errors: &mut Errors<'_>,
) {
    let Kind::Map(entries) = &node.kind else {
        errors.push(
            task,
            Some(label),
            node.pos,
            format!(
                "expected a mapping with cpu, memory or gpu, found {}",
                node.describe()
            ),
        );
        return;
    };
    for (key, value) in entries {
        let Some(field) = key_name(key, task, errors) else {
            continue;
        };
        let quantity = |v: &Node| match &v.kind {
            Kind::Str(s) => Ok(s.clone()),
            Kind::Int(i) => Ok(i.to_string()),
            Kind::UInt(u) => Ok(u.to_string()),
            Kind::Float(f) if f.is_finite() && *f > 0.0 => Ok(f.to_string()),
            _ => Err((
                v.pos,
                format!(
                    "expected a quantity such as \"2\" or \"512Mi\", found {}",
                    v.describe()
                ),
            )),
        };
        // Kubernetes' grammar for both engines, checked now rather than when
        // the first attempt starts.
        let checked = |v: &Node, check: fn(&str) -> Result<u64, String>| {
            quantity(v).and_then(|q| check(&q).map(|_| q).map_err(|msg| (v.pos, msg)))
        };
        let result = match field.as_str() {
            "cpu" => checked(value, quantity::cpu_millis).map(|q| out.cpu = Some(q)),
            "memory" => checked(value, quantity::memory_bytes).map(|q| out.memory = Some(q)),
            "gpu" => whole(value).map(|n| out.gpu = Some(n)),
            other => {
                unknown_field(
                    other,
                    &format!("{label}.{other}"),
                    RESOURCE_FIELDS,
                    task,
                    key.pos,
                    errors,
                );
                Ok(())
            }
        };
        if let Err((pos, msg)) = result {
            errors.push(task, Some(&format!("{label}.{field}")), pos, msg);
        }
    }
}

fn env(
    node: &Node,
    out: &mut BTreeMap<String, EnvValue>,
    task: Option<&str>,
    errors: &mut Errors<'_>,
) {
    let Kind::Map(entries) = &node.kind else {
        errors.push(
            task,
            Some("env"),
            node.pos,
            format!(
                "expected a mapping of variable names to values, found {}",
                node.describe()
            ),
        );
        return;
    };
    for (key, value) in entries {
        let Some(name) = key_name(key, task, errors) else {
            continue;
        };
        let field = format!("env.{name}");
        if let Err(msg) = check_env_name(&name) {
            errors.push(task, Some(&field), key.pos, msg);
            continue;
        }
        let usage = "expected a value, `{secret: NAME}` or `{from_env: VAR}`";
        let parsed = match &value.kind {
            Kind::Str(s) => Ok(EnvValue::Literal(s.clone())),
            Kind::Bool(b) => Ok(EnvValue::Literal(b.to_string())),
            Kind::Int(i) => Ok(EnvValue::Literal(i.to_string())),
            Kind::UInt(u) => Ok(EnvValue::Literal(u.to_string())),
            Kind::Float(f) => Ok(EnvValue::Literal(f.to_string())),
            Kind::Null => Ok(EnvValue::Literal(String::new())),
            Kind::Map(inner) => match inner.as_slice() {
                [(k, v)] if k.as_str() == Some("secret") => match text(v) {
                    Ok(s) if s.trim().is_empty() => {
                        Err((v.pos, "the secret name is empty".to_owned()))
                    }
                    // The name becomes a file name in the server's secrets
                    // folder, so `../x` must never get this far.
                    Ok(s) => match crate::events::check_secret_name(&s) {
                        Ok(()) => Ok(EnvValue::Secret(s)),
                        Err(msg) => Err((v.pos, msg)),
                    },
                    Err(e) => Err(e),
                },
                // The server's own variable: any well-formed name. Which
                // ones a workflow may read is the server's allow-list
                // (`--allow-env`), checked at deploy and at dispatch.
                [(k, v)] if k.as_str() == Some("from_env") => {
                    text(v).and_then(|s| match check_env_syntax(&s) {
                        Ok(()) => Ok(EnvValue::FromEnv(s)),
                        Err(msg) => Err((v.pos, msg)),
                    })
                }
                _ => Err((value.pos, format!("{usage}, found a mapping"))),
            },
            Kind::Seq(_) => Err((value.pos, format!("{usage}, found a list"))),
        };
        match parsed {
            Ok(v) => {
                out.insert(name, v);
            }
            Err((pos, msg)) => errors.push(task, Some(&field), pos, msg),
        }
    }
}

/// A well-formed variable name: letters, digits and `_`, not starting with a
/// digit.
fn check_env_syntax(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid environment variable name; use letters, digits and `_`, not starting with a digit"
        ))
    }
}

/// A name a task's `env` may set: well-formed, and not one ork sets itself.
fn check_env_name(name: &str) -> Result<(), String> {
    check_env_syntax(name)?;
    if name.to_ascii_uppercase().starts_with("ORK_") {
        return Err(format!(
            "names starting with `ORK_` are reserved for ork; rename `{name}`"
        ));
    }
    Ok(())
}
