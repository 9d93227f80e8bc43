//! Executors start task attempts somewhere and can stop them. The attempt
//! itself reports back over gRPC; an executor only launches, watches the
//! launch, and kills.

pub mod pool;
pub mod spec;
mod subprocess;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::state::Fence;

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

/// What an executor needs to launch one attempt. The worker fetches the rest
/// (input, env, files) with the fence.
#[derive(Debug, Clone)]
pub struct Launch {
    pub fence: Fence,
    pub run_id: String,
    pub task_name: String,
    pub timeout_seconds: u32,
    /// For pool tasks: the handler to run.
    pub handler: Option<String>,
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
    /// The launched process ended. If the attempt is still active, it ended
    /// without reporting, and `description` says how.
    Exited { fence: Fence, description: String },
}

/// The executor port.
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    /// Starts the attempt; returns an id that `cancel` and `status` accept.
    async fn dispatch(&self, launch: &Launch) -> Result<String, Error>;
    /// Stops the execution: a polite signal first, a forced kill after a grace period.
    async fn cancel(&self, execution_id: &str) -> Result<(), Error>;
    async fn status(&self, execution_id: &str) -> Result<ExecutionStatus, Error>;
    /// How many more attempts it can start now; `None` when unbounded.
    fn free_slots(&self) -> Option<u32> {
        None
    }
}

/// Executors by the name tasks use in their `executor` field.
#[derive(Clone, Default)]
pub struct Executors {
    by_name: HashMap<String, Arc<dyn Executor>>,
}

impl Executors {
    pub fn register(&mut self, name: &str, executor: Arc<dyn Executor>) {
        self.by_name.insert(name.to_owned(), executor);
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Executor>> {
        self.by_name.get(name)
    }

    /// Free slots of every launching executor (all but the pool), summed;
    /// `u32::MAX` when one of them is unbounded.
    pub fn launch_capacity(&self) -> u32 {
        self.by_name
            .iter()
            .filter(|(name, _)| name.as_str() != ork_domain::WORKERS_EXECUTOR)
            .map(|(_, e)| e.free_slots().unwrap_or(u32::MAX))
            .fold(0u32, u32::saturating_add)
    }

    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}
