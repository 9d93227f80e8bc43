//! The gRPC API: one file per service, each converting between proto and the
//! state/domain types; errors mapped in one table (`error.rs`). The HTTP/JSON
//! gateway (`gateway.rs`) calls the same service structs.

pub mod convert;
pub mod error;
pub mod events;
pub mod gateway;
pub mod openapi;
pub mod prometheus;
mod run_service;
mod run_streams;
mod worker_service;
mod workflow_service;

use std::sync::Arc;
use std::time::Duration;

use ork_proto::v1::run_service_server::RunServiceServer;
use ork_proto::v1::worker_service_server::WorkerServiceServer;
use ork_proto::v1::workflow_service_server::WorkflowServiceServer;

use crate::executor::Executors;
use crate::objects::MirrorHandle;
use crate::scheduler::SchedulerHandle;
use crate::state::StateStore;

pub use run_service::RunApi;
pub use worker_service::WorkerApi;
pub use workflow_service::WorkflowApi;

/// Largest gRPC message the server accepts (a deploy carries task files).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// What every service handler shares.
#[derive(Clone)]
pub struct ApiContext {
    pub state: Arc<dyn StateStore>,
    pub scheduler: SchedulerHandle,
    pub mirror: MirrorHandle,
    pub executors: Arc<Executors>,
    pub heartbeat_interval: Duration,
    /// This replica's scheduler name: runs it creates are leased to it.
    pub owner: String,
    /// Outputs above this many bytes are stored by reference.
    pub inline_output_limit: usize,
    /// Where outputs stored by reference go.
    pub outputs: Arc<dyn crate::state::OutputStore>,
    /// Attached pool workers.
    pub pool: Arc<crate::executor::WorkerPool>,
    /// How often pool sessions are pinged; a session silent for three pings
    /// is closed and its attempts are retried.
    pub ping_interval: Duration,
    /// Resolves `secret` and `from_env` values and masks secrets in reports.
    pub secrets: Arc<crate::secrets::Secrets>,
    /// Wakes streaming readers (`FollowTaskLogs`, `WatchRun`) after a commit.
    pub events: events::EventHub,
    /// What `/metrics` serves.
    pub metrics: crate::metrics::Metrics,
}

/// Every gRPC service of the server, plus health and reflection.
pub fn routes(ctx: ApiContext) -> Result<tonic::service::Routes, tonic_reflection::server::Error> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    // Serving from the start: the stores are open before the listener is.
    drop(health_reporter);
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ork_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ork_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let mut routes = tonic::service::Routes::default();
    routes = routes
        .add_service(
            WorkflowServiceServer::new(WorkflowApi { ctx: ctx.clone() })
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(RunServiceServer::new(RunApi { ctx: ctx.clone() }))
        .add_service(
            WorkerServiceServer::new(WorkerApi { ctx })
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    Ok(routes)
}
