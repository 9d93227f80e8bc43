//! Executors start task attempts somewhere and can stop them. The attempt
//! itself reports back over gRPC; an executor only launches, watches the
//! launch, and kills. Executors never read the state store: the claim built
//! the spec, and every execution is found again by its attempt's fence.

#[cfg(any(feature = "cloudrun", feature = "containerapp"))]
pub mod cloud_api;
#[cfg(feature = "cloudrun")]
mod cloudrun;
#[cfg(feature = "containerapp")]
mod containerapp;
#[cfg(feature = "docker")]
mod docker;
#[cfg(feature = "fargate")]
mod fargate;
#[cfg(feature = "kubernetes")]
mod kubernetes;
mod labels;
pub mod pool;
pub mod spec;
mod subprocess;
mod watch;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use ork_domain::ImagePullPolicy;
use ork_proto::v1;

use crate::state::{FailureKind, Fence};

#[cfg(feature = "cloudrun")]
pub use cloudrun::{
    CloudRunExecutor, CloudRunOptions, DEFAULT_ENDPOINT as CLOUDRUN_DEFAULT_ENDPOINT,
};
#[cfg(feature = "containerapp")]
pub use containerapp::{
    API_VERSION as CONTAINERAPP_API_VERSION, ARM_RESOURCE, ContainerAppExecutor,
    ContainerAppOptions, DEFAULT_ENDPOINT as CONTAINERAPP_DEFAULT_ENDPOINT,
};
#[cfg(feature = "docker")]
pub use docker::{DockerExecutor, DockerOptions, WorkerTls, is_dynamically_linked};
#[cfg(feature = "fargate")]
pub use fargate::{FargateExecutor, FargateOptions};
#[cfg(feature = "kubernetes")]
pub use kubernetes::{KubernetesExecutor, KubernetesOptions};
pub use pool::{PoolExecutor, PoolStats, WorkerPool};
pub use subprocess::{SubprocessExecutor, SubprocessOptions};

/// Errors of executors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot start `{program}`: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("cannot signal execution {id}: {message}")]
    Signal { id: String, message: String },
    #[error(
        "the ork-worker binary was not found next to this executable nor on PATH; build it (`cargo build --release`) or pass --worker-binary"
    )]
    WorkerBinaryNotFound,
    /// No attached pool worker has a free slot for the handler right now.
    #[error("no pool worker with a free slot serves handler `{handler}`")]
    NoCapacity { handler: String },
    /// The attempt cannot run as specified; retrying will not help.
    #[error("{0}")]
    Rejected(String),
    #[error("{0}")]
    Unavailable(String),
}

/// What an executor needs to launch one attempt: its fence and its spec
/// (input, env with secrets resolved, files, handler), built by the claim.
#[derive(Debug, Clone)]
pub struct Launch {
    pub fence: Fence,
    /// The spec (input, env with secrets resolved, files, handler), built
    /// by the claim.
    pub spec: v1::TaskSpec,
    /// The workflow the run belongs to (for labels).
    pub workflow: String,
    /// For container executors: what to run the worker in.
    pub container: Option<ContainerSpec>,
}

/// A container task's image and limits, from its definition (quantities
/// already validated at deploy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    pub image: String,
    pub pull_policy: ImagePullPolicy,
    /// CPU as a Kubernetes quantity, e.g. `500m`.
    pub cpu: Option<String>,
    /// Memory as a Kubernetes quantity, e.g. `256Mi`.
    pub memory: Option<String>,
}

/// An execution found in an engine by its labels: one this process started,
/// or one left by an earlier server process. The token is read back from the
/// execution's own environment, so the scheduler can act on it fenced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    pub id: String,
    pub fence: Fence,
    /// False once the container or pod has ended.
    pub running: bool,
}

/// Where an execution stands, as far as the executor can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecutionStatus {
    Running,
    Exited {
        code: Option<i32>,
    },
    /// Not known to this executor (e.g. started by a previous server process).
    Unknown,
}

/// Something an executor noticed on its own.
#[derive(Debug, Clone)]
pub enum ExecutorEvent {
    /// The launched process, container or pod ended. If the attempt is still
    /// active, it ended without reporting: it fails with `description`, as
    /// `kind` (a vanished worker is `Lost`; an out-of-memory kill is a task
    /// failure that spends a retry; an image that cannot be pulled is
    /// `non_retryable`).
    Exited {
        fence: Fence,
        description: String,
        kind: FailureKind,
        non_retryable: bool,
    },
}

/// The executor port. An execution is named by its attempt's fence: an
/// executor that must find executions again after a restart derives their
/// names from it (a container named after the task run and attempt, say).
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    /// Starts the attempt.
    async fn dispatch(&self, launch: &Launch) -> Result<(), Error>;
    /// Stops the attempt's execution: a polite signal first, a forced kill
    /// after a grace period. Nothing happens for an execution it does not know.
    async fn cancel(&self, fence: &Fence) -> Result<(), Error>;
    async fn status(&self, fence: &Fence) -> Result<ExecutionStatus, Error>;
    /// How many more attempts it can start now; `None` when unbounded.
    fn free_slots(&self) -> Option<u32> {
        None
    }
    /// Every execution of ork's in the engine, whoever started it. Executors
    /// whose executions die with the server (subprocess, pool) have none.
    async fn list(&self) -> Result<Vec<Execution>, Error> {
        Ok(Vec::new())
    }
    /// Watches an execution this process did not start (a server restart),
    /// so that its end without a report becomes an [`ExecutorEvent`]. Does
    /// nothing for one already watched.
    async fn adopt(&self, _execution: &Execution) -> Result<(), Error> {
        Ok(())
    }
}

/// Executors by the name tasks use in their `executor` field.
#[derive(Clone, Default)]
pub struct Executors {
    by_name: HashMap<String, Arc<dyn Executor>>,
    /// Executors this server knows but cannot run, with the fix (server
    /// options to pass, a feature to build with).
    unavailable: HashMap<String, String>,
}

impl Executors {
    pub fn register(&mut self, name: &str, executor: Arc<dyn Executor>) {
        self.unavailable.remove(name);
        self.by_name.insert(name.to_owned(), executor);
    }

    /// Marks `name` as known but not runnable here: deploying a workflow
    /// that uses it fails, saying `fix`.
    pub fn register_unavailable(&mut self, name: &str, fix: String) {
        self.unavailable.insert(name.to_owned(), fix);
    }

    /// Why this server cannot run `name` tasks, if it cannot.
    pub fn why_unavailable(&self, name: &str) -> Option<&str> {
        self.unavailable.get(name).map(String::as_str)
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Executor>> {
        self.by_name.get(name)
    }

    /// How many launched attempts may be claimed now: the fewest free slots
    /// of the bounded launching executors (all but the pool), `u32::MAX`
    /// when none is bounded. Claims count launches of every executor
    /// together, so the smallest budget is the one that keeps every cap (a
    /// per-executor budget in the claim would let a full executor not hold
    /// back the others).
    pub fn launch_capacity(&self) -> u32 {
        self.by_name
            .iter()
            .filter(|(name, _)| name.as_str() != ork_domain::WORKERS_EXECUTOR)
            .filter_map(|(_, e)| e.free_slots())
            .min()
            .unwrap_or(u32::MAX)
    }

    /// Every executor with its name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<dyn Executor>)> {
        self.by_name.iter().map(|(n, e)| (n.as_str(), e))
    }

    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}
