//! The workflow definition and the run-time statuses, as plain data.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Default `timeout_seconds` of a task.
pub const DEFAULT_TIMEOUT_SECONDS: u32 = 3600;
/// The executor a task uses when its YAML names none.
pub const DEFAULT_EXECUTOR: &str = "subprocess";
/// Executors the server knows. A new executor is added here first, so that
/// validation accepts it and error messages list it.
pub const KNOWN_EXECUTORS: &[&str] = &[
    "subprocess",
    WORKERS_EXECUTOR,
    DOCKER_EXECUTOR,
    KUBERNETES_EXECUTOR,
    FARGATE_EXECUTOR,
    CLOUDRUN_EXECUTOR,
    CONTAINERAPP_EXECUTOR,
];
/// The executor that hands tasks to long-lived pool workers by `handler`.
pub const WORKERS_EXECUTOR: &str = "workers";
/// The executor that runs each attempt in a container of a Docker engine.
pub const DOCKER_EXECUTOR: &str = "docker";
/// The executor that runs each attempt as a Kubernetes Job.
pub const KUBERNETES_EXECUTOR: &str = "kubernetes";
/// The executor that runs each attempt as an ECS task on AWS Fargate.
pub const FARGATE_EXECUTOR: &str = "fargate";
/// The executor that runs each attempt as a Google Cloud Run job execution.
pub const CLOUDRUN_EXECUTOR: &str = "cloudrun";
/// The executor that runs each attempt as an Azure Container Apps job
/// execution.
pub const CONTAINERAPP_EXECUTOR: &str = "containerapp";
/// Executors that run a task in its `image`.
pub const CONTAINER_EXECUTORS: &[&str] = &[
    DOCKER_EXECUTOR,
    KUBERNETES_EXECUTOR,
    FARGATE_EXECUTOR,
    CLOUDRUN_EXECUTOR,
    CONTAINERAPP_EXECUTOR,
];
/// Container executors that pull images themselves, always (serverless
/// platforms have no local image store): `image_pull_policy` means nothing
/// to them.
pub const ALWAYS_PULLING_EXECUTORS: &[&str] =
    &[FARGATE_EXECUTOR, CLOUDRUN_EXECUTOR, CONTAINERAPP_EXECUTOR];
/// Time zone a schedule is read in when the YAML names none.
pub const DEFAULT_TIMEZONE: &str = "UTC";
/// Cap on an exponential retry delay when `retry_max_delay_seconds` is not set,
/// so that doubling never waits longer than an hour by surprise.
pub const DEFAULT_RETRY_MAX_DELAY_SECONDS: u32 = 3600;

fn default_timezone() -> String {
    DEFAULT_TIMEZONE.to_owned()
}

/// A validated workflow: what `parse_workflow` returns and what the store keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowDefinition {
    pub name: String,
    /// Cron expression (5 fields, or 6 with seconds), as written.
    pub schedule: Option<String>,
    /// IANA time zone the schedule is read in (default `UTC`).
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// What to do with fires missed while no scheduler ran (default `latest`).
    #[serde(default)]
    pub catchup: Catchup,
    /// Most runs of this workflow allowed at once; `None` means no limit.
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// The run input's declared fields (`inputs:`), in the order the YAML
    /// lists them. `None` when the workflow declares none: any input object
    /// is then accepted as it is. See [`crate::inputs`].
    #[serde(default)]
    pub inputs: Option<Vec<InputDefinition>>,
    /// The workflow's `defaults:` block as written (`python`, `executor`, `image`, `resources`). Parsing
    /// already merged it into every task it applies to, so code downstream
    /// of parsing reads only the tasks' own fields; it is kept for display.
    #[serde(default)]
    pub defaults: BTreeMap<String, serde_json::Value>,
    /// The folder the workflow file was deployed from, when relative
    /// `python` or `command` paths were resolved against it (so the same
    /// YAML deployed from elsewhere is a different version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_dir: Option<String>,
    /// What else starts runs of it (`on:`): an event subscription, signed
    /// webhooks.
    #[serde(default, skip_serializing_if = "OnTriggers::is_empty")]
    pub on: OnTriggers,
    /// Named JSON-Schema-style types that tasks' `output_type` refers to.
    /// [`crate::types`] describes the supported keywords; one type refers to
    /// another with `$ref: "#/types/NAME"`.
    pub types: BTreeMap<String, TypeSchema>,
    /// Tasks in the order the YAML lists them.
    pub tasks: Vec<TaskDefinition>,
}

/// The `on:` block: what starts runs of a workflow besides people and its
/// schedule. See [`crate::events`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OnTriggers {
    /// The event name the workflow subscribes to (`on: {event: NAME}`).
    #[serde(default)]
    pub event: Option<String>,
    /// Fields the event's data must have for a run to start: a dotted path
    /// (`customer.tier`) to the value it must equal.
    #[serde(default)]
    pub filter: BTreeMap<String, serde_json::Value>,
    /// The name of the server secret webhook calls are signed with
    /// (`on: {webhook: {secret: NAME}}`); never the secret itself.
    #[serde(default)]
    pub webhook_secret: Option<String>,
}

impl OnTriggers {
    pub fn is_empty(&self) -> bool {
        self.event.is_none() && self.filter.is_empty() && self.webhook_secret.is_none()
    }
}

/// A JSON-Schema-style type, kept as the JSON the user wrote.
pub type TypeSchema = serde_json::Value;

/// One declared field of a run's input (`inputs: {date: {type: string}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputDefinition {
    pub name: String,
    /// The field's JSON-Schema-style type (the subset of [`crate::types`]),
    /// without its `default` and `description`.
    pub schema: TypeSchema,
    /// True when the field has no `default`: a run must give it.
    #[serde(default)]
    pub required: bool,
    /// Applied when a run's input lacks an optional field (`None` stands
    /// for a `default: null`, which JSON cannot tell from no value).
    #[serde(default)]
    pub default: Option<serde_json::Value>,
    #[serde(default)]
    pub description: Option<String>,
}

/// One task of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDefinition {
    pub name: String,
    pub executor: String,
    /// Path relative to the YAML file, as written.
    /// For `executor: workers`: the function a pool worker registered.
    #[serde(default)]
    pub handler: Option<String>,
    pub file: Option<String>,
    /// A program and its arguments (no shell). With `file`, the file's local
    /// path is appended as the last argument; without, the task is the
    /// command alone.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// The interpreter of a `.py` `file` without `command` (default
    /// `python3` on the worker's PATH).
    #[serde(default)]
    pub python: Option<String>,
    pub config_file: Option<String>,
    /// Input with `{{ ... }}` templates still in it.
    pub input: serde_json::Value,
    pub depends_on: Vec<String>,
    pub timeout_seconds: u32,
    pub retries: u32,
    pub retry_delay_seconds: u32,
    /// How the delay grows from one retry to the next.
    #[serde(default)]
    pub retry_backoff: RetryBackoff,
    /// Ceiling of an exponential delay; `None` means
    /// [`DEFAULT_RETRY_MAX_DELAY_SECONDS`].
    #[serde(default)]
    pub retry_max_delay_seconds: Option<u32>,
    pub parallel: Option<Parallelism>,
    pub concurrency: Option<u32>,
    pub resources: Resources,
    /// For container tasks (docker, kubernetes, serverless): the image the task runs in.
    #[serde(default)]
    pub image: Option<String>,
    /// For `docker` and `kubernetes` tasks: when the engine pulls the image.
    #[serde(default)]
    pub image_pull_policy: ImagePullPolicy,
    pub env: BTreeMap<String, EnvValue>,
    pub on_failure: OnFailure,
    pub output_type: Option<String>,
}

/// How many instances of a task run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Parallelism {
    /// `parallel: 4`.
    Static(u32),
    /// `parallel: {count: discover.count}`: an integer field of an upstream output.
    CountRef(FieldRef),
    /// `parallel: {for_each: discover.files}`: one instance per array element.
    ForEach(FieldRef),
}

/// `task.field.sub`: a path into an upstream task's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldRef {
    pub task: String,
    /// Path of object keys below the output; never empty.
    pub path: Vec<String>,
}

/// What a task does when an upstream task failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnFailure {
    /// Skip this task (the default).
    #[default]
    Skip,
    /// Run it anyway, e.g. to clean up or notify.
    Run,
}

/// How the delay between attempts grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RetryBackoff {
    /// The same `retry_delay_seconds` before every retry (the default).
    #[default]
    Fixed,
    /// `retry_delay_seconds * 2^(attempt-1)`, capped and jittered.
    Exponential,
}

/// Resource limits, as Kubernetes quantities (see [`crate::quantity`]):
/// Docker enforces them as the container's limits, Kubernetes as the pod's
/// requests and limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU, e.g. "500m" or "2".
    #[serde(default)]
    pub cpu: Option<String>,
    /// Memory, e.g. "512Mi".
    #[serde(default)]
    pub memory: Option<String>,
    #[serde(default)]
    pub gpu: Option<u32>,
}

impl Resources {
    /// Each field of `self`, else the one of `defaults`.
    pub fn or(&self, defaults: &Resources) -> Resources {
        Resources {
            cpu: self.cpu.clone().or_else(|| defaults.cpu.clone()),
            memory: self.memory.clone().or_else(|| defaults.memory.clone()),
            gpu: self.gpu.or(defaults.gpu),
        }
    }
}

/// Where an environment variable's value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnvValue {
    Literal(String),
    /// Resolved at dispatch from the server's secret source; never stored.
    Secret(String),
    /// Copied from the server's environment at dispatch.
    FromEnv(String),
}

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The lowercase word used in the API, the CLI and the database.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses the word `as_str` produces.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum! {
    /// Status of a run.
    RunStatus {
        Pending = "pending",
        Running = "running",
        Success = "success",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

string_enum! {
    /// Status of a task run. It only moves forward; a retry is a new attempt
    /// that starts again from `Pending`.
    TaskStatus {
        Pending = "pending",
        Dispatched = "dispatched",
        Running = "running",
        Success = "success",
        Failed = "failed",
        Skipped = "skipped",
        Cancelled = "cancelled",
    }
}

string_enum! {
    /// Missed-fire policy of a schedule (`catchup:`): what happens to fires
    /// that came due while no scheduler was running. See
    /// [`crate::schedule::due_fires`].
    Catchup {
        /// Drop missed fires; only a fire at most a minute old still runs.
        Skip = "skip",
        /// Run once for the most recent missed fire (the default).
        Latest = "latest",
        /// Run every missed fire, oldest first, keeping the most recent
        /// [`crate::schedule::MAX_CATCHUP_FIRES`].
        All = "all",
    }
}

// `string_enum!` derives a fixed set of traits, so `Default` is written out.
#[allow(clippy::derivable_impls)]
impl Default for Catchup {
    fn default() -> Self {
        Catchup::Latest
    }
}

string_enum! {
    /// What created a run.
    TriggerType {
        Manual = "manual",
        Schedule = "schedule",
        Retry = "retry",
        /// A published event the workflow subscribes to (`on: {event: ...}`).
        Event = "event",
        /// A signed webhook call (`POST /hooks/WORKFLOW`).
        Webhook = "webhook",
    }
}

string_enum! {
    /// When a container engine pulls a task's image (`image_pull_policy`).
    ImagePullPolicy {
        /// Pull only when the engine does not have the image (the default).
        IfNotPresent = "if_not_present",
        /// Pull before every attempt, so a moved tag is followed.
        Always = "always",
        /// Never pull: the image must already be there.
        Never = "never",
    }
}

// `string_enum!` derives a fixed set of traits, so `Default` is written out.
#[allow(clippy::derivable_impls)]
impl Default for ImagePullPolicy {
    fn default() -> Self {
        ImagePullPolicy::IfNotPresent
    }
}

impl RunStatus {
    /// True once the run can change no more (until an explicit retry).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Success | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

impl TaskStatus {
    /// True once the task run can change no more (until an explicit retry).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Success | TaskStatus::Failed | TaskStatus::Skipped | TaskStatus::Cancelled
        )
    }

    /// True while an attempt is out with a worker.
    pub fn is_active(self) -> bool {
        matches!(self, TaskStatus::Dispatched | TaskStatus::Running)
    }
}

impl Parallelism {
    /// The upstream task whose output decides the instance count, if any.
    pub fn source_task(&self) -> Option<&str> {
        match self {
            Parallelism::Static(_) => None,
            Parallelism::CountRef(r) | Parallelism::ForEach(r) => Some(&r.task),
        }
    }
}

impl std::fmt::Display for FieldRef {
    /// `task.field.sub`, as written in the YAML.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.task)?;
        for key in &self.path {
            write!(f, ".{key}")?;
        }
        Ok(())
    }
}

impl TaskDefinition {
    /// True when the task has a `parallel` setting, so its instances' outputs
    /// are read as a list (`tasks.T.outputs`) rather than one value.
    pub fn is_fanned_out(&self) -> bool {
        self.parallel.is_some()
    }
}

impl WorkflowDefinition {
    /// The task named `name`, if the workflow has one.
    pub fn task(&self, name: &str) -> Option<&TaskDefinition> {
        self.tasks.iter().find(|t| t.name == name)
    }
}
