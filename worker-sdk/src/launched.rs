//! The launched supervisor: runs any command as one task attempt.
//!
//! An executor starts `ork-worker` with the attempt's coordinates in the
//! environment; [`run`] takes the spec (from stdin when the executor wrote it
//! there, else fetched), writes the task's files into a private
//! attempt directory, runs the task in its own process group, streams its
//! stdout and stderr as logs, heartbeats, enforces the deadline, and reports the
//! result. The task itself needs no SDK: it reads `ORK_INPUT` and writes
//! `ORK_OUTPUT` (see the crate documentation for the whole contract).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ork_proto::v1::{LogEntry, TaskSpec};
use rustix::process::{Pid, Signal};
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::{AttemptRef, Client, RetryPolicy};
use crate::logs::{BatchLimits, LineSplitter, LogBatcher};
use crate::metrics::TaskMetrics;
use crate::{Error, json};

/// Exit code with which a task says "do not retry me": the failure is reported
/// as non-retryable.
pub const EXIT_CODE_NON_RETRYABLE: i32 = 3;

/// How many trailing stderr lines go into the error of a failed task.
const STDERR_TAIL_LINES: usize = 20;

/// The file the input is written to, inside the attempt directory.
const INPUT_FILE: &str = "input.json";
/// The file the task writes its output to, inside the attempt directory.
const OUTPUT_FILE: &str = "output.json";
/// The file an SDK writes a failure's message to (`ORK_ERROR`).
const ERROR_FILE: &str = "error.txt";
/// The file a task writes its metrics to (`ORK_METRICS`), `name value` lines.
const METRICS_FILE: &str = "metrics.txt";

/// How long the pipes may stay open after the task's process group was killed.
/// Only a process that left the group (setsid) and kept the pipe can hold them
/// longer; its output is then abandoned rather than hanging the report.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything the supervisor needs to know before it asks the server.
#[derive(Debug, Clone)]
pub struct LaunchConfig {
    /// The ork server's gRPC URL (`ORK_SERVER`).
    pub server_url: String,
    /// The attempt to run (`ORK_TASK_RUN_ID`, `ORK_ATTEMPT`, `ORK_TOKEN`).
    pub attempt: AttemptRef,
    /// The parent of the attempt directory (`ORK_WORK_DIR`, default the system
    /// temp dir).
    pub work_dir: PathBuf,
    /// Keep the attempt directory after the attempt (`ORK_KEEP_WORK_DIR=1`), to
    /// debug a task.
    pub keep_work_dir: bool,
    /// How long a task may take to stop after SIGTERM before it gets SIGKILL
    /// (`ORK_KILL_GRACE_SECONDS`, default 10).
    pub kill_grace: Duration,
    /// How server calls are retried.
    pub retry: RetryPolicy,
    /// The executor writes the attempt's spec to standard input
    /// (`ORK_SPEC_STDIN=1`, the subprocess executor), so it need not be
    /// fetched: one round trip less before the task starts.
    pub spec_on_stdin: bool,
}

impl LaunchConfig {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `get` (the environment, or a map in
    /// tests). Each error names the variable and says what is expected.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let required = |name: &str| {
            get(name).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
                Error::Config(format!(
                    "{name} is not set; ork-worker is meant to be started by an ork executor, \
                     which sets ORK_SERVER, ORK_TASK_RUN_ID, ORK_ATTEMPT and ORK_TOKEN"
                ))
            })
        };
        let server_url = required("ORK_SERVER")?;
        let task_run_id = required("ORK_TASK_RUN_ID")?;
        let attempt_text = required("ORK_ATTEMPT")?;
        let attempt = attempt_text.trim().parse::<u32>().map_err(|e| {
            Error::Config(format!(
                "ORK_ATTEMPT must be a non-negative integer, got {attempt_text:?}: {e}"
            ))
        })?;
        let token = required("ORK_TOKEN")?;
        let work_dir = get("ORK_WORK_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let keep_work_dir = get("ORK_KEEP_WORK_DIR").is_some_and(|v| is_truthy(&v));
        let kill_grace = match get("ORK_KILL_GRACE_SECONDS").filter(|v| !v.is_empty()) {
            None => Duration::from_secs(10),
            Some(v) => Duration::from_secs(v.trim().parse::<u64>().map_err(|e| {
                Error::Config(format!(
                    "ORK_KILL_GRACE_SECONDS must be a whole number of seconds, got {v:?}: {e}"
                ))
            })?),
        };
        Ok(Self {
            server_url,
            attempt: AttemptRef {
                task_run_id,
                attempt,
                token,
            },
            work_dir,
            keep_work_dir,
            kill_grace,
            retry: RetryPolicy::default(),
            spec_on_stdin: get(SPEC_STDIN).is_some_and(|v| is_truthy(&v)),
        })
    }
}

/// Set by an executor that writes the attempt's spec (a protobuf
/// `TaskSpec`) to the worker's standard input and closes it.
pub const SPEC_STDIN: &str = "ORK_SPEC_STDIN";

/// Largest spec read from standard input, as large as a fetched one may be.
const MAX_SPEC_BYTES: u64 = 64 << 20;

/// The spec the executor wrote to standard input, when it is this
/// attempt's; `None` (the spec is then fetched) when stdin holds nothing
/// usable.
async fn spec_from_stdin(attempt: &AttemptRef) -> Option<TaskSpec> {
    use prost::Message as _;
    let read = tokio::task::spawn_blocking(|| {
        use std::io::Read as _;
        let mut bytes = Vec::new();
        std::io::stdin()
            .take(MAX_SPEC_BYTES)
            .read_to_end(&mut bytes)
            .map(|_| bytes)
    })
    .await;
    let bytes = match read.map_err(std::io::Error::from).and_then(|r| r) {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the spec from stdin; fetching it");
            return None;
        }
    };
    match TaskSpec::decode(bytes.as_slice()) {
        Ok(spec) if spec.task_run_id == attempt.task_run_id && spec.attempt == attempt.attempt => {
            Some(spec)
        }
        Ok(_) => {
            tracing::warn!("the spec on stdin is another attempt's; fetching this one's");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "the spec on stdin is unreadable; fetching it");
            None
        }
    }
}

fn is_truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

/// How one launched attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The task succeeded and its output was recorded.
    Completed,
    /// The task failed and its error was recorded.
    Failed {
        /// The error as reported.
        error: String,
        /// Whether it was reported as non-retryable.
        non_retryable: bool,
    },
    /// The server cancelled the attempt; the task was stopped and nothing was
    /// reported, as the server already knows.
    Cancelled,
    /// The server no longer considers this attempt current; the task was
    /// stopped and nothing was recorded.
    Stale,
    /// The supervisor received SIGTERM or SIGINT; the task was stopped and
    /// nothing was reported (exit code 1), so the server retries it: at once
    /// when its executor sees the exit, else once its heartbeats stop.
    Interrupted,
}

/// Runs the attempt described by `config` to its end and reports its result.
///
/// Returns `Ok` when the attempt's fate is settled (reported, cancelled, or no
/// longer ours) and `Err` when it could not be reported. This function installs
/// SIGTERM and SIGINT handlers so that stopping the supervisor stops the task.
pub async fn run(config: LaunchConfig) -> Result<Outcome, Error> {
    let client = Client::connect(&config.server_url, config.attempt.clone())
        .await?
        .with_retry_policy(config.retry);
    let given = match config.spec_on_stdin {
        true => spec_from_stdin(&config.attempt).await,
        false => None,
    };
    let fetched = match given {
        Some(spec) => Ok(spec),
        None => client.get_spec().await,
    };
    let spec = match fetched {
        Ok(spec) => spec,
        Err(Error::Stale(message)) => {
            tracing::warn!(%message, "attempt is no longer current, not running it");
            return Ok(Outcome::Stale);
        }
        Err(e) => return Err(e),
    };
    let dir = config.work_dir.join(attempt_dir_name(
        &config.attempt.task_run_id,
        config.attempt.attempt,
    ));
    let result = supervise(&config, &client, &spec, &dir).await;
    if config.keep_work_dir {
        tracing::info!(dir = %dir.display(), "keeping the attempt directory (ORK_KEEP_WORK_DIR)");
    } else if let Err(e) = tokio::fs::remove_dir_all(&dir).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove the attempt directory");
    }
    match result {
        Err(Error::Stale(message)) => {
            tracing::warn!(%message, "attempt is no longer current, stopped");
            Ok(Outcome::Stale)
        }
        other => other,
    }
}

/// The name of an attempt's directory; the run id is sanitised because it comes
/// from outside and becomes a path component.
pub(crate) fn attempt_dir_name(task_run_id: &str, attempt: u32) -> String {
    let id: String = task_run_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("ork-{id}-{attempt}")
}

/// The base name under which a task file is written into the attempt
/// directory, or `None` when the name has no usable base name. Only the last
/// path component is kept, so no name can escape the directory.
pub(crate) fn safe_file_name(name: &str) -> Option<&str> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    match base {
        "" | "." | ".." => None,
        b if b.contains('\0') => None,
        b => Some(b),
    }
}

/// How a task file is started when the task names no `command`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interpreter {
    /// The task's `python` (default `python3`) with the file.
    Python,
    /// `bash FILE`
    Bash,
    /// The file itself (a binary, or a script with a shebang line).
    Direct,
}

/// The interpreter of `.py` files when the task names none: the first
/// `python3` on the worker's PATH.
pub const DEFAULT_PYTHON: &str = "python3";

impl Interpreter {
    /// Chosen by extension, so a script runs even without a shebang line or an
    /// executable bit.
    pub(crate) fn for_file(name: &str) -> Self {
        let ext = Path::new(name).extension().and_then(|e| e.to_str());
        match ext {
            Some(e) if e.eq_ignore_ascii_case("py") => Self::Python,
            Some(e) if e.eq_ignore_ascii_case("sh") => Self::Bash,
            _ => Self::Direct,
        }
    }

    /// The program and arguments that run `path`; `python` is the task's
    /// interpreter for `.py` files (empty: [`DEFAULT_PYTHON`]).
    pub(crate) fn argv(self, path: &Path, python: &str) -> (OsString, Vec<OsString>) {
        match self {
            Self::Python if python.is_empty() => (DEFAULT_PYTHON.into(), vec![path.into()]),
            Self::Python => (python.into(), vec![path.into()]),
            Self::Bash => ("bash".into(), vec![path.into()]),
            Self::Direct => (path.into(), Vec::new()),
        }
    }
}

/// What the supervisor starts for `spec`: its `command` (with the
/// materialised file's path appended when it has a file), else the file by
/// its extension. `None` when the spec names neither.
pub(crate) fn task_argv(spec: &TaskSpec, file: Option<&Path>) -> Option<(OsString, Vec<OsString>)> {
    if let Some((program, args)) = spec.command.split_first() {
        let mut args: Vec<OsString> = args.iter().map(OsString::from).collect();
        args.extend(file.map(OsString::from));
        return Some((program.into(), args));
    }
    let file = file?;
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    Some(Interpreter::for_file(name).argv(file, &spec.python))
}

/// Interprets the content of the output file: missing or blank means `null`.
pub(crate) fn parse_output(content: Option<&[u8]>) -> Result<serde_json::Value, String> {
    let Some(bytes) = content else {
        return Ok(serde_json::Value::Null);
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_slice(bytes).map_err(|e| {
        format!(
            "the task's output is not valid JSON ({e}); write a JSON document to the file \
             named by ORK_OUTPUT"
        )
    })
}

/// The error reported for a task that exited with a non-zero code.
pub(crate) fn exit_code_error(code: i32, stderr_tail: &[String]) -> String {
    if stderr_tail.is_empty() {
        format!("exited with code {code}")
    } else {
        format!("exited with code {code}: {}", stderr_tail.join("\n"))
    }
}

/// The error reported for a task killed by a signal.
pub(crate) fn signal_error(signal: i32) -> String {
    let name = match signal {
        1 => Some("SIGHUP"),
        2 => Some("SIGINT"),
        6 => Some("SIGABRT"),
        9 => Some("SIGKILL"),
        11 => Some("SIGSEGV"),
        13 => Some("SIGPIPE"),
        15 => Some("SIGTERM"),
        _ => None,
    };
    match name {
        Some(name) => format!("killed by signal {signal} ({name})"),
        None => format!("killed by signal {signal}"),
    }
}

/// How many processes the kernel killed for lack of memory in this
/// process's memory cgroup (`oom_kill` in cgroup v2's `memory.events` or v1's
/// `memory.oom_control`); `None` where the kernel does not say. Inside a
/// container the cgroup file system shows the container's own cgroup at
/// its root, so the root's file is read when the path is not there.
pub(crate) fn oom_kills() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut candidates = Vec::new();
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let path = path.trim_start_matches('/');
        if controllers.is_empty() {
            candidates.push(Path::new("/sys/fs/cgroup").join(path).join("memory.events"));
            candidates.push(PathBuf::from("/sys/fs/cgroup/memory.events"));
        } else if controllers.split(',').any(|c| c == "memory") {
            let root = Path::new("/sys/fs/cgroup/memory");
            candidates.push(root.join(path).join("memory.oom_control"));
            candidates.push(root.join("memory.oom_control"));
        }
    }
    candidates.iter().find_map(|file| {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|t| parse_oom_kill(&t))
    })
}

/// The `oom_kill N` line of a cgroup memory file.
pub(crate) fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

/// Longest failure message kept from the ORK_ERROR file.
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// Keeps the end of a long failure message: a traceback's last lines matter most.
pub(crate) fn truncate_error(text: &str) -> String {
    let text = text.trim_end();
    if text.len() <= MAX_ERROR_BYTES {
        return text.to_owned();
    }
    let mut start = text.len() - MAX_ERROR_BYTES;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("[…truncated]\n{}", &text[start..])
}

/// The error reported for a task that ran past its deadline.
pub(crate) fn timeout_error(timeout_seconds: u32, deadline: Option<DateTime<Utc>>) -> String {
    match (timeout_seconds, deadline) {
        (0, Some(d)) => format!("timed out: passed its deadline {}", d.to_rfc3339()),
        (s, _) => format!("timed out after {s}s"),
    }
}

/// What an exited task reports, from its exit status, the message it wrote
/// to `ORK_ERROR` (if any) and its output file. `Ok(output)` completes the
/// task; `Err((error, non_retryable))` fails it. A task that explained its
/// failure in `ORK_ERROR` (an SDK's exception and traceback) is reported
/// with that text alone: its first line is the headline people read, so no
/// exit code is put before it.
pub(crate) fn judge_exit(
    status: ExitStatus,
    stderr_tail: &[String],
    error_text: Option<String>,
    output: Result<Option<Vec<u8>>, String>,
) -> Result<serde_json::Value, (String, bool)> {
    if let Some(code) = status.code() {
        if code != 0 {
            let error = match error_text {
                Some(text) => text,
                None => exit_code_error(code, stderr_tail),
            };
            return Err((error, code == EXIT_CODE_NON_RETRYABLE));
        }
        // A task that exits 0 but leaves an unreadable or malformed output has a
        // bug that a retry will not fix.
        let bytes = output.map_err(|e| (e, true))?;
        return parse_output(bytes.as_deref()).map_err(|e| (e, true));
    }
    match status.signal() {
        Some(signal) => Err((signal_error(signal), false)),
        None => Err((format!("ended with unknown status {status}"), false)),
    }
}

/// The paths of a prepared attempt directory.
#[derive(Debug)]
struct Prepared {
    /// The task's file, written into the directory; `None` for a `command`
    /// task without a file.
    file: Option<PathBuf>,
    config_file: Option<PathBuf>,
    input: PathBuf,
    output: PathBuf,
    /// Where an SDK writes a failure's full message (e.g. a traceback).
    error: PathBuf,
    /// Where the task writes its metrics.
    metrics: PathBuf,
}

/// Why an attempt could not be prepared, and whether a retry may help.
struct PrepareError {
    message: String,
    non_retryable: bool,
}

impl PrepareError {
    fn permanent(message: String) -> Self {
        Self {
            message,
            non_retryable: true,
        }
    }

    fn io(what: &str, path: &Path, e: &std::io::Error) -> Self {
        // A full disk or a missing work dir is this machine's problem: another
        // attempt, perhaps elsewhere, may succeed.
        Self {
            message: format!("could not {what} {}: {e}", path.display()),
            non_retryable: false,
        }
    }
}

/// Creates the attempt directory and writes the task file, config file and
/// input into it.
async fn prepare(dir: &Path, spec: &TaskSpec) -> Result<Prepared, PrepareError> {
    if spec.file.is_empty() && spec.command.is_empty() {
        return Err(PrepareError::permanent(
            "the task has neither `file` nor `command`; give it one of them".to_owned(),
        ));
    }
    let file_name = if spec.file.is_empty() {
        None
    } else {
        Some(safe_file_name(&spec.file).ok_or_else(|| {
            PrepareError::permanent(format!(
                "the task's file {:?} has no usable file name; name a file in the task's `file` field",
                spec.file
            ))
        })?)
    };
    let config_name = if spec.config_file.is_empty() {
        None
    } else {
        Some(safe_file_name(&spec.config_file).ok_or_else(|| {
            PrepareError::permanent(format!(
                "the task's config file {:?} has no usable file name",
                spec.config_file
            ))
        })?)
    };
    for name in file_name.into_iter().chain(config_name) {
        if [INPUT_FILE, OUTPUT_FILE, ERROR_FILE, METRICS_FILE].contains(&name) {
            return Err(PrepareError::permanent(format!(
                "the task file name {name:?} collides with ork's own {name}; rename the file"
            )));
        }
    }
    if let Some(file_name) = file_name
        && config_name == Some(file_name)
    {
        return Err(PrepareError::permanent(format!(
            "the task's file and config file are both named {file_name:?}; rename one of them"
        )));
    }

    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| PrepareError::io("create the attempt directory", dir, &e))?;
    let file = match file_name {
        Some(name) => {
            let path = dir.join(name);
            write_executable(&path, &spec.file_content).await?;
            Some(path)
        }
        None => None,
    };
    let config_file = match config_name {
        Some(name) => {
            let path = dir.join(name);
            write_executable(&path, &spec.config_file_content).await?;
            Some(path)
        }
        None => None,
    };
    let input = dir.join(INPUT_FILE);
    let input_value = spec
        .input
        .as_ref()
        .map_or(serde_json::Value::Null, json::from_proto);
    let input_bytes = serde_json::to_vec(&input_value)
        .map_err(|e| PrepareError::permanent(format!("could not encode the task input: {e}")))?;
    tokio::fs::write(&input, input_bytes)
        .await
        .map_err(|e| PrepareError::io("write", &input, &e))?;
    // A directory kept from an earlier launch of this attempt may hold an old
    // output, which must not be mistaken for this run's.
    let output = dir.join(OUTPUT_FILE);
    let error = dir.join(ERROR_FILE);
    let metrics = dir.join(METRICS_FILE);
    for stale in [&output, &error, &metrics] {
        match tokio::fs::remove_file(stale).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(PrepareError::io("remove the old", stale, &e));
            }
            _ => {}
        }
    }
    Ok(Prepared {
        file,
        config_file,
        input,
        output,
        error,
        metrics,
    })
}

async fn write_executable(path: &Path, content: &[u8]) -> Result<(), PrepareError> {
    tokio::fs::write(path, content)
        .await
        .map_err(|e| PrepareError::io("write", path, &e))?;
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .await
        .map_err(|e| PrepareError::io("make executable", path, &e))
}

/// The deadline from the spec: the absolute `deadline`, else `timeout_seconds`
/// from now, else none.
fn effective_deadline(spec: &TaskSpec) -> Option<DateTime<Utc>> {
    if let Some(ts) = spec.deadline {
        match DateTime::<Utc>::try_from(ts) {
            Ok(d) => return Some(d),
            Err(e) => tracing::warn!(error = e, "ignoring the spec's invalid deadline"),
        }
    }
    (spec.timeout_seconds > 0)
        .then(|| Utc::now() + chrono::Duration::seconds(i64::from(spec.timeout_seconds)))
}

/// Builds the task's command: interpreter, working directory, environment and
/// its own process group.
fn build_command(
    config: &LaunchConfig,
    spec: &TaskSpec,
    prepared: &Prepared,
    dir: &Path,
    deadline: Option<DateTime<Utc>>,
) -> Command {
    // `prepare` refused a spec with neither a file nor a command.
    let (program, args) = task_argv(spec, prepared.file.as_deref()).unwrap_or_default();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that stopping the task reaches every process
        // it started, not just the first one.
        .process_group(0);
    // The supervisor's ORK_TOKEN is the attempt's credential: under that name
    // an `ork` CLI or a pool SDK the task starts would send it as an API
    // token. The task gets it as ORK_ATTEMPT_TOKEN, and ORK_TOKEN only when
    // its own env sets one.
    cmd.env_remove("ORK_TOKEN");
    // Its stdin is not the spec: a worker it starts fetches its own.
    cmd.env_remove(SPEC_STDIN);
    // The spec's env first, so ork's own variables cannot be overridden by it.
    cmd.envs(&spec.env);
    let attempt = &config.attempt;
    cmd.env("ORK_INPUT", &prepared.input)
        .env("ORK_OUTPUT", &prepared.output)
        .env("ORK_ERROR", &prepared.error)
        .env("ORK_METRICS", &prepared.metrics)
        .env("ORK_RUN_ID", &spec.run_id)
        .env("ORK_WORKFLOW", &spec.workflow)
        .env("ORK_TASK_NAME", &spec.task_name)
        .env("ORK_TASK_RUN_ID", &attempt.task_run_id)
        .env("ORK_ATTEMPT", attempt.attempt.to_string())
        .env("ORK_ATTEMPT_TOKEN", &attempt.token)
        .env("ORK_SERVER", &config.server_url);
    // Inherited values of the optional variables would describe some other
    // task, so each one is either set for this task or removed.
    set_or_remove(
        &mut cmd,
        "ORK_PARALLEL_INDEX",
        spec.parallel_index.map(|i| i.to_string()),
    );
    set_or_remove(
        &mut cmd,
        "ORK_PARALLEL_COUNT",
        spec.parallel_count.map(|c| c.to_string()),
    );
    set_or_remove(
        &mut cmd,
        "ORK_CONFIG_FILE",
        prepared
            .config_file
            .as_ref()
            .map(|p| p.as_os_str().to_owned()),
    );
    set_or_remove(&mut cmd, "ORK_DEADLINE", deadline.map(|d| d.to_rfc3339()));
    // The task's own spans continue the attempt's span in the run's trace.
    set_or_remove(
        &mut cmd,
        "TRACEPARENT",
        Some(spec.traceparent.clone()).filter(|t| !t.is_empty()),
    );
    cmd
}

fn set_or_remove(cmd: &mut Command, name: &str, value: Option<impl Into<OsString>>) {
    match value {
        Some(v) => cmd.env(name, v.into()),
        None => cmd.env_remove(name),
    };
}

/// Sends `signal` to the task's process group. A group that no longer exists
/// is not an error: the task already ended.
fn signal_group(pgid: Option<u32>, signal: Signal) {
    let Some(pid) = pgid
        .and_then(|p| i32::try_from(p).ok())
        .and_then(Pid::from_raw)
    else {
        return;
    };
    if let Err(e) = rustix::process::kill_process_group(pid, signal)
        && e != rustix::io::Errno::SRCH
    {
        tracing::warn!(pgid = pid.as_raw_nonzero().get(), error = %e, "could not signal the task");
    }
}

/// SIGKILLs the task's group when dropped before the task was reaped, so that
/// no early return leaves the task running.
struct GroupGuard {
    pgid: Option<u32>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        signal_group(self.pgid, Signal::KILL);
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Asks the task to stop (SIGTERM to its group), then forces it (SIGKILL)
/// after the grace period.
async fn terminate(
    child: &mut Child,
    pgid: Option<u32>,
    grace: Duration,
) -> std::io::Result<ExitStatus> {
    signal_group(pgid, Signal::TERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            tracing::warn!(?grace, "task did not stop after SIGTERM, sending SIGKILL");
            signal_group(pgid, Signal::KILL);
            child.wait().await
        }
    }
}

/// Reads one pipe of the task to its end: echoes each line to the supervisor's
/// stderr, forwards it as a log entry, and returns its last `keep_tail` lines.
async fn capture(
    mut pipe: impl AsyncRead + Unpin,
    stream: &'static str,
    prefix: Arc<str>,
    tx: mpsc::Sender<LogEntry>,
    keep_tail: usize,
) -> VecDeque<String> {
    let mut splitter = LineSplitter::default();
    let mut tail = VecDeque::with_capacity(keep_tail);
    let mut buf = vec![0_u8; 16 * 1024];
    let mut emit = async |line: String| {
        // The supervisor's stderr is the executor's log: a failure to write it
        // must not stop the task.
        let _ = writeln!(std::io::stderr().lock(), "[{prefix} {stream}] {line}");
        if keep_tail > 0 {
            if tail.len() == keep_tail {
                tail.pop_front();
            }
            tail.push_back(line.clone());
        }
        let entry = LogEntry {
            stream: stream.to_owned(),
            line,
            time: Some(Utc::now().into()),
        };
        // The shipper is gone only after a stale answer; keep reading anyway so
        // the task never blocks on a full pipe.
        let _ = tx.send(entry).await;
    };
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(stream, error = %e, "could not read the task's output");
                break;
            }
        };
        for line in splitter.push(&buf[..n]) {
            emit(line).await;
        }
    }
    if let Some(line) = splitter.finish() {
        emit(line).await;
    }
    tail
}

/// How the log shipper ended.
#[derive(Debug, PartialEq, Eq)]
enum Shipped {
    /// Every line was sent (or dropped after the server stayed unreachable).
    All,
    /// The server answered that the attempt is stale.
    Stale,
}

/// Sends captured lines in batches until the capture ends, then flushes the
/// rest. Signals `stale` at once when the server says the attempt is stale.
async fn ship_logs(
    client: Client,
    mut rx: mpsc::Receiver<LogEntry>,
    limits: BatchLimits,
    stale: oneshot::Sender<()>,
) -> Shipped {
    let mut batcher = LogBatcher::new(limits);
    let mut open = true;
    while open {
        let received = match batcher.due_at() {
            Some(due) => tokio::select! {
                entry = rx.recv() => Some(entry),
                () = tokio::time::sleep_until(Instant::from_std(due)) => None,
            },
            None => Some(rx.recv().await),
        };
        match received {
            Some(Some(entry)) => batcher.push(entry, std::time::Instant::now()),
            Some(None) => open = false,
            None => {}
        }
        // At the end every remaining line is due: never lose the tail.
        loop {
            let batch = if open {
                batcher.take_if_due(std::time::Instant::now())
            } else {
                Some(batcher.take_batch()).filter(|b| !b.is_empty())
            };
            let Some(batch) = batch else { break };
            let count = batch.len();
            match client.append_logs(batch).await {
                Ok(()) => {}
                Err(Error::Stale(_)) => {
                    let _ = stale.send(());
                    return Shipped::Stale;
                }
                Err(e) => tracing::warn!(lines = count, error = %e, "dropping log lines"),
            }
        }
    }
    Shipped::All
}

/// Heartbeats every `interval` until aborted; tells `events` when the attempt
/// is cancelled or stale.
async fn heartbeats(client: Client, interval: Duration, events: mpsc::Sender<Stop>) {
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match client.heartbeat().await {
            Ok(false) => {}
            Ok(true) => {
                let _ = events.send(Stop::Cancelled).await;
                return;
            }
            Err(Error::Stale(_)) => {
                let _ = events.send(Stop::Stale).await;
                return;
            }
            // The server may be restarting; the next heartbeat tries again, and a
            // server that gave the attempt up answers the report with Stale.
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}

/// Why the task stopped being waited on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Cancelled,
    Stale,
    TimedOut,
    Interrupted,
}

/// Runs a prepared attempt: everything after `GetTaskSpec`.
async fn supervise(
    config: &LaunchConfig,
    client: &Client,
    spec: &TaskSpec,
    dir: &Path,
) -> Result<Outcome, Error> {
    // The attempt is marked running while its files are written; the
    // task itself starts only once the server agreed (the fence).
    let (prepared, started) = tokio::join!(prepare(dir, spec), client.start());
    started?;
    let prepared = match prepared {
        Ok(p) => p,
        Err(e) => {
            return report_failure(client, e.message, e.non_retryable, TaskMetrics::new()).await;
        }
    };
    // The handlers are installed before the task starts, so a SIGTERM sent to
    // the supervisor can never leave the task running without it.
    let mut signals = {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => Some((term, int)),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "could not handle SIGTERM; stopping ork-worker will not stop the task");
                None
            }
        }
    };
    let deadline = effective_deadline(spec);
    let oom_before = oom_kills();
    let mut cmd = build_command(config, spec, &prepared, dir, deadline);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            // An interpreter missing here may exist on another machine: retryable.
            let program = cmd.as_std().get_program().to_string_lossy().into_owned();
            let what = if !spec.command.is_empty() {
                " (the task's `command`)"
            } else if !spec.python.is_empty() {
                " (the task's `python`)"
            } else {
                ""
            };
            let message = format!("could not start {program}{what}: {e}");
            return report_failure(client, message, false, TaskMetrics::new()).await;
        }
    };
    let pgid = child.id();
    let mut guard = GroupGuard { pgid };
    tracing::info!(task = %spec.task_name, pid = ?pgid, "task started");

    let prefix: Arc<str> = match spec.parallel_index {
        Some(i) => format!("{}[{i}]", spec.task_name).into(),
        None => spec.task_name.as_str().into(),
    };
    let (line_tx, line_rx) = mpsc::channel(4096);
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let out_reader =
        stdout.map(|p| tokio::spawn(capture(p, "stdout", prefix.clone(), line_tx.clone(), 0)));
    let err_reader = stderr.map(|p| {
        tokio::spawn(capture(
            p,
            "stderr",
            prefix.clone(),
            line_tx.clone(),
            STDERR_TAIL_LINES,
        ))
    });
    drop(line_tx);
    let (stale_tx, mut stale_rx) = oneshot::channel();
    let shipper = AbortOnDrop(tokio::spawn(ship_logs(
        client.clone(),
        line_rx,
        BatchLimits::default(),
        stale_tx,
    )));
    let (stop_tx, mut stop_rx) = mpsc::channel(1);
    let interval = Duration::from_secs(u64::from(spec.heartbeat_interval_seconds.max(1)));
    // Heartbeats go on until the report is done, since flushing logs and
    // reporting may take a while when the server is restarting.
    let _heartbeat = AbortOnDrop(tokio::spawn(heartbeats(client.clone(), interval, stop_tx)));

    let deadline_sleep = async {
        match deadline {
            Some(d) => {
                let left = (d - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                tokio::time::sleep(left).await;
            }
            None => std::future::pending().await,
        }
    };
    let interrupted = async {
        match signals.as_mut() {
            Some((term, int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            None => std::future::pending::<()>().await,
        }
    };

    let waited = tokio::select! {
        status = child.wait() => Ok(status),
        Some(stop) = stop_rx.recv() => Err(stop),
        Ok(()) = &mut stale_rx => Err(Stop::Stale),
        () = deadline_sleep => Err(Stop::TimedOut),
        () = interrupted => Err(Stop::Interrupted),
    };
    let (status, stop) = match waited {
        Ok(status) => (status, None),
        Err(Stop::Stale) => {
            // A newer attempt may be running already: stop at once, no grace.
            signal_group(pgid, Signal::KILL);
            let _ = child.wait().await;
            guard.pgid = None;
            return Err(Error::Stale("the server gave this attempt up".to_owned()));
        }
        Err(stop) => {
            tracing::info!(?stop, "stopping the task");
            (
                terminate(&mut child, pgid, config.kill_grace).await,
                Some(stop),
            )
        }
    };
    // The task is reaped. Whatever it left behind in its group is killed now:
    // the attempt is over, and a leftover holding the pipes would keep the log
    // capture open. Lines already in the pipes are still read.
    signal_group(pgid, Signal::KILL);
    guard.pgid = None;
    let status = status.map_err(|e| Error::io("could not wait for the task", e))?;

    if stop == Some(Stop::Interrupted) {
        // Stopped by a signal: end promptly. The logs get a few seconds (a
        // server that is gone would otherwise be retried for the client's
        // whole retry window), and nothing is reported: the server retries
        // the attempt once its heartbeats stop.
        drain(out_reader).await;
        drain(err_reader).await;
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, wait_shipper(shipper)).await;
        tracing::warn!("supervisor interrupted, task stopped without a report");
        return Ok(Outcome::Interrupted);
    }
    // Shipping logs and reporting retry a server that does not answer for
    // the client's retry window (10 minutes by default); a SIGTERM or SIGINT
    // meanwhile ends the worker at once, without a report.
    let finish = async {
        drain(out_reader).await;
        let stderr_tail: Vec<String> = drain(err_reader).await.into();
        // Logs go before the report: once the attempt is finished the server may
        // refuse them, and readers of a finished run expect all its logs.
        if wait_shipper(shipper).await == Shipped::Stale {
            return Err(Error::Stale(
                "the server refused the attempt's logs".to_owned(),
            ));
        }

        match stop {
            Some(Stop::Cancelled) => {
                tracing::info!("attempt cancelled by the server, not reporting");
                Ok(Outcome::Cancelled)
            }
            Some(Stop::Interrupted) => Ok(Outcome::Interrupted),
            Some(Stop::TimedOut) => {
                let metrics = read_metrics(client, &prepared.metrics).await;
                let error = timeout_error(spec.timeout_seconds, deadline);
                report_failure(client, error, false, metrics).await
            }
            Some(Stop::Stale) | None => {
                let output = match tokio::fs::read(&prepared.output).await {
                    Ok(bytes) => Ok(Some(bytes)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(format!(
                        "could not read the output file {}: {e}",
                        prepared.output.display()
                    )),
                };
                // An SDK's full failure message (a traceback) beats the stderr tail.
                let error_text = tokio::fs::read(&prepared.error)
                    .await
                    .ok()
                    .map(|b| truncate_error(&String::from_utf8_lossy(&b)))
                    .filter(|t| !t.trim().is_empty());
                let metrics = read_metrics(client, &prepared.metrics).await;
                match judge_exit(status, &stderr_tail, error_text, output) {
                    Ok(output) => report_success(client, output, metrics).await,
                    Err((error, non_retryable)) => {
                        // A SIGKILL the task did not ask for is most often the
                        // kernel's out-of-memory killer inside a memory limit.
                        let oom = status.signal() == Some(9)
                            && matches!((oom_before, oom_kills()), (Some(a), Some(b)) if b > a);
                        let error = if oom {
                            format!(
                                "OOMKilled: the task ran out of its memory limit and was {error}"
                            )
                        } else {
                            error
                        };
                        report_failure(client, error, non_retryable, metrics).await
                    }
                }
            }
        }
    };
    let interrupted = async {
        match signals.as_mut() {
            Some((term, int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        outcome = finish => outcome,
        () = interrupted => {
            tracing::warn!("supervisor interrupted while reporting; the attempt is left to the server");
            Ok(Outcome::Interrupted)
        }
    }
}

/// Waits for a pipe reader, abandoning it after [`DRAIN_TIMEOUT`].
async fn drain(reader: Option<JoinHandle<VecDeque<String>>>) -> VecDeque<String> {
    let Some(reader) = reader else {
        return VecDeque::new();
    };
    let abort = reader.abort_handle();
    match tokio::time::timeout(DRAIN_TIMEOUT, reader).await {
        Ok(Ok(tail)) => tail,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "log capture failed");
            VecDeque::new()
        }
        Err(_) => {
            tracing::warn!(
                "a process outside the task's group holds its output open; abandoning it"
            );
            abort.abort();
            VecDeque::new()
        }
    }
}

async fn wait_shipper(mut shipper: AbortOnDrop<Shipped>) -> Shipped {
    match (&mut shipper.0).await {
        Ok(shipped) => shipped,
        Err(e) => {
            tracing::warn!(error = %e, "log shipping failed");
            Shipped::All
        }
    }
}

/// Reads the metrics the task wrote to `ORK_METRICS` (none when it wrote
/// nothing); lines that cannot be used are told in the task's log.
async fn read_metrics(client: &Client, path: &Path) -> TaskMetrics {
    let text = match tokio::fs::read(path).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return TaskMetrics::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "could not read the task's metrics");
            return TaskMetrics::new();
        }
    };
    let (metrics, warnings) = crate::metrics::parse_file(&text);
    if !warnings.is_empty() {
        let entries = warnings
            .into_iter()
            .map(|line| LogEntry {
                stream: "stderr".to_owned(),
                line,
                time: Some(Utc::now().into()),
            })
            .collect();
        if let Err(e) = client.append_logs(entries).await {
            tracing::warn!(error = %e, "could not log the unusable metric lines");
        }
    }
    metrics
}

async fn report_success(
    client: &Client,
    output: serde_json::Value,
    metrics: TaskMetrics,
) -> Result<Outcome, Error> {
    match client.complete(output, metrics.clone()).await {
        Ok(()) => {
            tracing::info!("task completed");
            Ok(Outcome::Completed)
        }
        // The server refused the output itself (too large, say): record that as
        // the task's failure so the run does not wait for a lost heartbeat.
        Err(e @ Error::Rpc { .. }) => {
            report_failure(
                client,
                format!("could not record the task's output: {e}"),
                true,
                metrics,
            )
            .await
        }
        Err(e) => Err(e),
    }
}

async fn report_failure(
    client: &Client,
    error: String,
    non_retryable: bool,
    metrics: TaskMetrics,
) -> Result<Outcome, Error> {
    tracing::info!(%error, non_retryable, "task failed");
    client.fail(error.clone(), non_retryable, metrics).await?;
    Ok(Outcome::Failed {
        error,
        non_retryable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const BASE: &[(&str, &str)] = &[
        ("ORK_SERVER", "http://127.0.0.1:7400"),
        ("ORK_TASK_RUN_ID", "tr-1"),
        ("ORK_ATTEMPT", "2"),
        ("ORK_TOKEN", "tok"),
    ];

    #[test]
    fn config_reads_required_and_optional_variables() {
        let mut vars = BASE.to_vec();
        vars.extend([
            ("ORK_WORK_DIR", "/var/ork"),
            ("ORK_KEEP_WORK_DIR", "1"),
            ("ORK_KILL_GRACE_SECONDS", "3"),
        ]);
        let c = LaunchConfig::from_lookup(lookup(&vars)).expect("valid config");
        assert_eq!(c.server_url, "http://127.0.0.1:7400");
        assert_eq!(c.attempt.task_run_id, "tr-1");
        assert_eq!(c.attempt.attempt, 2);
        assert_eq!(c.attempt.token, "tok");
        assert_eq!(c.work_dir, PathBuf::from("/var/ork"));
        assert!(c.keep_work_dir);
        assert_eq!(c.kill_grace, Duration::from_secs(3));
    }

    #[test]
    fn long_error_files_keep_their_end() {
        let long = format!("{}END", "x".repeat(MAX_ERROR_BYTES + 10));
        let cut = truncate_error(&long);
        assert!(cut.starts_with("[…truncated]"));
        assert!(cut.ends_with("END"));
        assert_eq!(truncate_error("short\n"), "short");
    }

    #[test]
    fn config_defaults() {
        let c = LaunchConfig::from_lookup(lookup(BASE)).expect("valid config");
        assert_eq!(c.work_dir, std::env::temp_dir());
        assert!(!c.keep_work_dir);
        assert_eq!(c.kill_grace, Duration::from_secs(10));
        let mut vars = BASE.to_vec();
        vars.push(("ORK_KEEP_WORK_DIR", "0"));
        assert!(
            !LaunchConfig::from_lookup(lookup(&vars))
                .expect("valid")
                .keep_work_dir
        );
    }

    #[test]
    fn config_errors_name_the_variable() {
        for missing in ["ORK_SERVER", "ORK_TASK_RUN_ID", "ORK_ATTEMPT", "ORK_TOKEN"] {
            let vars: Vec<_> = BASE
                .iter()
                .copied()
                .filter(|(k, _)| *k != missing)
                .collect();
            let err = LaunchConfig::from_lookup(lookup(&vars))
                .err()
                .map(|e| e.to_string());
            let err = err.unwrap_or_default();
            assert!(
                err.starts_with(&format!("invalid configuration: {missing} is not set")),
                "{err}"
            );
        }
        let mut vars = BASE.to_vec();
        vars.push(("ORK_ATTEMPT", "two"));
        let vars: Vec<_> = vars
            .into_iter()
            .filter(|kv| *kv != ("ORK_ATTEMPT", "2"))
            .collect();
        let err = LaunchConfig::from_lookup(lookup(&vars))
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("ORK_ATTEMPT must be a non-negative integer")));
    }

    #[test]
    fn interpreter_is_chosen_by_extension() {
        assert_eq!(Interpreter::for_file("etl.py"), Interpreter::Python);
        assert_eq!(Interpreter::for_file("ETL.PY"), Interpreter::Python);
        assert_eq!(Interpreter::for_file("run.sh"), Interpreter::Bash);
        assert_eq!(Interpreter::for_file("tool"), Interpreter::Direct);
        assert_eq!(Interpreter::for_file("main.go"), Interpreter::Direct);
        assert_eq!(
            Interpreter::for_file(".py"),
            Interpreter::Direct,
            "a dotfile has no extension"
        );
        let path = Path::new("/tmp/x/etl.py");
        assert_eq!(
            Interpreter::Python.argv(path, ""),
            (
                OsString::from("python3"),
                vec![OsString::from("/tmp/x/etl.py")]
            )
        );
        assert_eq!(
            Interpreter::Python.argv(path, "/venv/bin/python"),
            (
                OsString::from("/venv/bin/python"),
                vec![OsString::from("/tmp/x/etl.py")]
            )
        );
        assert_eq!(
            Interpreter::Bash.argv(path, "/venv/bin/python"),
            (
                OsString::from("bash"),
                vec![OsString::from("/tmp/x/etl.py")]
            )
        );
        assert_eq!(
            Interpreter::Direct.argv(path, ""),
            (OsString::from("/tmp/x/etl.py"), vec![])
        );
    }

    #[test]
    fn a_command_runs_as_written_with_the_file_appended() {
        let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let file = Path::new("/w/ork-1/build.js");
        let spec = TaskSpec {
            command: vec!["node".into(), "--max-old-space-size=64".into()],
            ..TaskSpec::default()
        };
        assert_eq!(
            task_argv(&spec, Some(file)),
            Some((
                OsString::from("node"),
                os(&["--max-old-space-size=64", "/w/ork-1/build.js"])
            ))
        );
        let inline = TaskSpec {
            command: vec!["bash".into(), "-c".into(), "echo hi".into()],
            ..TaskSpec::default()
        };
        assert_eq!(
            task_argv(&inline, None),
            Some((OsString::from("bash"), os(&["-c", "echo hi"])))
        );
        let py = TaskSpec {
            python: "/srv/.venv/bin/python".into(),
            ..TaskSpec::default()
        };
        assert_eq!(
            task_argv(&py, Some(Path::new("/w/job.py"))),
            Some((OsString::from("/srv/.venv/bin/python"), os(&["/w/job.py"])))
        );
        assert_eq!(task_argv(&TaskSpec::default(), None), None);
    }

    #[test]
    fn file_names_cannot_escape_the_attempt_directory() {
        assert_eq!(safe_file_name("etl.py"), Some("etl.py"));
        assert_eq!(safe_file_name("scripts/etl.py"), Some("etl.py"));
        assert_eq!(safe_file_name("../../etc/passwd"), Some("passwd"));
        assert_eq!(safe_file_name("/abs/run.sh"), Some("run.sh"));
        assert_eq!(safe_file_name("dir\\win.py"), Some("win.py"));
        assert_eq!(safe_file_name(""), None);
        assert_eq!(safe_file_name(".."), None);
        assert_eq!(safe_file_name("a/.."), None);
        assert_eq!(safe_file_name("."), None);
        assert_eq!(safe_file_name("dir/"), None);
        assert_eq!(safe_file_name("a\0b"), None);
    }

    #[test]
    fn attempt_dir_name_is_one_safe_component() {
        assert_eq!(attempt_dir_name("01HZX-abc_1", 3), "ork-01HZX-abc_1-3");
        assert_eq!(attempt_dir_name("../x/y", 1), "ork-___x_y-1");
    }

    #[test]
    fn output_parsing() {
        assert_eq!(parse_output(None), Ok(serde_json::Value::Null));
        assert_eq!(parse_output(Some(b"")), Ok(serde_json::Value::Null));
        assert_eq!(parse_output(Some(b" \n\t")), Ok(serde_json::Value::Null));
        assert_eq!(
            parse_output(Some(br#"{"rows": 12}"#)),
            Ok(serde_json::json!({"rows": 12}))
        );
        assert_eq!(parse_output(Some(b"42\n")), Ok(serde_json::json!(42)));
        let err = parse_output(Some(b"{not json")).err().unwrap_or_default();
        assert!(
            err.starts_with("the task's output is not valid JSON (key must be a string"),
            "{err}"
        );
        assert!(
            err.ends_with("write a JSON document to the file named by ORK_OUTPUT"),
            "{err}"
        );
    }

    #[test]
    fn error_messages() {
        assert_eq!(exit_code_error(1, &[]), "exited with code 1");
        assert_eq!(
            exit_code_error(2, &["Traceback".into(), "ValueError: bad".into()]),
            "exited with code 2: Traceback\nValueError: bad"
        );
        assert_eq!(signal_error(9), "killed by signal 9 (SIGKILL)");
        assert_eq!(signal_error(40), "killed by signal 40");
        assert_eq!(timeout_error(30, None), "timed out after 30s");
        let d = DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z")
            .map(|d| d.with_timezone(&Utc))
            .ok();
        assert_eq!(timeout_error(30, d), "timed out after 30s");
        assert_eq!(
            timeout_error(0, d),
            "timed out: passed its deadline 2026-11-26T10:00:00+00:00"
        );
    }

    /// An exit status as `waitpid` encodes it: the code in the high byte, or the
    /// signal number in the low bits.
    fn exited(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn judging_an_exit() {
        let tail = vec!["boom".to_owned()];
        assert_eq!(
            judge_exit(exited(0), &tail, None, Ok(Some(b"{\"a\":1}".to_vec()))),
            Ok(serde_json::json!({"a": 1}))
        );
        assert_eq!(
            judge_exit(exited(0), &tail, None, Ok(None)),
            Ok(serde_json::Value::Null)
        );
        let bad = judge_exit(exited(0), &tail, None, Ok(Some(b"nope".to_vec())));
        assert!(
            matches!(bad, Err((ref m, true)) if m.contains("ORK_OUTPUT")),
            "{bad:?}"
        );
        assert_eq!(
            judge_exit(exited(0), &tail, None, Err("could not read".into())),
            Err(("could not read".to_owned(), true))
        );
        assert_eq!(
            judge_exit(exited(1), &tail, None, Ok(None)),
            Err(("exited with code 1: boom".to_owned(), false))
        );
        // A message in ORK_ERROR is the error, without the exit code before it.
        assert_eq!(
            judge_exit(
                exited(1),
                &tail,
                Some("ValueError: bad input\nTraceback ...".into()),
                Ok(None)
            ),
            Err(("ValueError: bad input\nTraceback ...".to_owned(), false))
        );
        // Exit code 3 means "do not retry"; the output file is ignored on failure.
        assert_eq!(
            judge_exit(exited(3), &tail, None, Ok(Some(b"{}".to_vec()))),
            Err(("exited with code 3: boom".to_owned(), true))
        );
        assert_eq!(
            judge_exit(ExitStatus::from_raw(15), &tail, None, Ok(None)),
            Err(("killed by signal 15 (SIGTERM)".to_owned(), false))
        );
    }

    fn spec_with(file: &str, config_file: &str) -> TaskSpec {
        TaskSpec {
            file: file.into(),
            file_content: b"#!/bin/sh\necho hi\n".to_vec(),
            config_file: config_file.into(),
            config_file_content: b"a: 1\n".to_vec(),
            input: Some(json::to_proto(
                &serde_json::json!({"date": "2026-11-26", "n": 3}),
            )),
            ..TaskSpec::default()
        }
    }

    #[test]
    fn reads_oom_kill_counts() {
        assert_eq!(
            parse_oom_kill("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
            Some(2)
        );
        assert_eq!(
            parse_oom_kill("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n"),
            Some(1)
        );
        assert_eq!(parse_oom_kill("oom_kill_disable 0\n"), None);
    }

    #[tokio::test]
    async fn prepare_writes_files_inside_the_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("ork-tr-1");
        let spec = spec_with("../scripts/run.sh", "conf/settings.yaml");
        let p = prepare(&dir, &spec)
            .await
            .map_err(|e| e.message)
            .expect("prepared");
        assert_eq!(p.file, Some(dir.join("run.sh")));
        assert_eq!(p.config_file, Some(dir.join("settings.yaml")));
        let program = p.file.clone().expect("a file");
        assert_eq!(
            std::fs::read(&program).ok(),
            Some(spec.file_content.clone())
        );
        let mode = std::fs::metadata(&program)
            .map(|m| m.permissions().mode() & 0o777)
            .ok();
        assert_eq!(mode, Some(0o755));
        let input: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&p.input).unwrap_or_default())
                .unwrap_or_default();
        assert_eq!(input, serde_json::json!({"date": "2026-11-26", "n": 3}));
        assert!(!p.output.exists(), "ORK_OUTPUT is not created");
        assert!(!tmp.path().join("scripts").exists());
    }

    #[tokio::test]
    async fn prepare_refuses_unusable_names() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("d");
        for (file, config) in [
            ("..", ""),
            ("input.json", ""),
            ("run.sh", "x/run.sh"),
            ("a.sh", "/"),
            ("", ""),
        ] {
            let err = prepare(&dir, &spec_with(file, config)).await.err();
            assert!(
                err.as_ref().is_some_and(|e| e.non_retryable),
                "{file} {config}"
            );
        }
    }

    #[tokio::test]
    async fn prepare_removes_a_stale_output() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("d");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(OUTPUT_FILE), b"{\"old\": true}").expect("write");
        let p = prepare(&dir, &spec_with("t.py", ""))
            .await
            .map_err(|e| e.message)
            .expect("ok");
        assert!(!p.output.exists());
        assert_eq!(p.config_file, None);
    }

    #[tokio::test]
    async fn capture_forwards_every_line_and_keeps_the_stderr_tail() {
        let (tx, mut rx) = mpsc::channel(100);
        let text: String = (1..=25).map(|i| format!("line {i}\n")).collect::<String>() + "tail";
        let tail = capture(text.as_bytes(), "stderr", "t".into(), tx, STDERR_TAIL_LINES).await;
        let mut lines = Vec::new();
        while let Some(entry) = rx.recv().await {
            assert_eq!(entry.stream, "stderr");
            assert!(entry.time.is_some());
            lines.push(entry.line);
        }
        assert_eq!(lines.len(), 26);
        assert_eq!(lines.last().map(String::as_str), Some("tail"));
        assert_eq!(tail.len(), STDERR_TAIL_LINES);
        assert_eq!(tail.front().map(String::as_str), Some("line 7"));
        assert_eq!(tail.back().map(String::as_str), Some("tail"));
    }

    /// Whether a process with this pid still exists (signal 0 probes it).
    fn alive(pid: i32) -> bool {
        Pid::from_raw(pid).is_some_and(|p| rustix::process::test_kill_process(p).is_ok())
    }

    #[tokio::test]
    async fn terminate_reaches_the_whole_process_group() {
        // The shell starts a background child that ignores SIGTERM, prints its
        // pid, and waits: only a SIGKILL to the group, after the grace period,
        // ends the grandchild.
        let mut cmd = Command::new("bash");
        cmd.args(["-c", "trap '' TERM; sleep 300 & echo $!; wait"])
            .stdout(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().expect("spawn bash");
        let pgid = child.id();
        let mut out = child.stdout.take().expect("piped stdout");
        let mut first = [0_u8; 32];
        let n = out.read(&mut first).await.expect("read pid");
        let grandchild: i32 = std::str::from_utf8(&first[..n])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .expect("pid printed");
        assert!(alive(grandchild));
        let started = std::time::Instant::now();
        let status = terminate(&mut child, pgid, Duration::from_millis(300))
            .await
            .expect("wait");
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "waited the grace period"
        );
        assert_eq!(
            status.signal(),
            Some(9),
            "bash ignored SIGTERM, so it was killed"
        );
        // The grandchild is a zombie until its reaper (init) collects it, so poll.
        let mut gone = false;
        for _ in 0..50 {
            if !alive(grandchild) || is_zombie(grandchild) {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone, "grandchild {grandchild} survived");
    }

    fn is_zombie(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit(')')
                    .next()
                    .map(|r| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true)
    }
}
