//! The gRPC API: one file per service, each converting between proto and the
//! state/domain types; errors mapped in one table (`error.rs`). The HTTP/JSON
//! gateway (`gateway.rs`) calls the same service structs.

pub mod convert;
pub mod error;
mod event_service;
pub mod events;
pub mod gateway;
pub mod hooks;
pub mod limits;
pub mod openapi;
mod pool_service;
pub mod prometheus;
mod run_service;
mod run_streams;
mod schedule_service;
mod token_service;
mod worker_service;
mod workflow_service;

use std::sync::Arc;
use std::time::Duration;

use ork_proto::v1::event_service_server::EventServiceServer;
use ork_proto::v1::pool_service_server::PoolServiceServer;
use ork_proto::v1::run_service_server::RunServiceServer;
use ork_proto::v1::schedule_service_server::ScheduleServiceServer;
use ork_proto::v1::token_service_server::TokenServiceServer;
use ork_proto::v1::worker_service_server::WorkerServiceServer;
use ork_proto::v1::workflow_service_server::WorkflowServiceServer;

use crate::executor::Executors;
use crate::reports::Reports;
use crate::state::StateStore;

pub use event_service::EventApi;
pub use pool_service::PoolApi;
pub use run_service::RunApi;
pub use schedule_service::ScheduleApi;
pub use token_service::TokenApi;
pub use worker_service::WorkerApi;
pub use workflow_service::WorkflowApi;

/// The descriptor sets of every gRPC service [`routes`] serves: ork's own,
/// health and both reflection versions. Reflection answers from the first
/// two; the auth layer's role table is checked against all of them.
pub const DESCRIPTOR_SETS: &[&[u8]] = &[
    ork_proto::FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
];

/// What every service handler shares.
#[derive(Clone)]
pub struct ApiContext {
    pub state: Arc<dyn StateStore>,
    /// Every report of an attempt goes through it.
    pub reports: Arc<Reports>,
    pub executors: Arc<Executors>,
    pub heartbeat_interval: Duration,
    /// This replica's scheduler name: runs it creates are leased to it.
    pub owner: String,
    /// Attached pool workers.
    pub pool: Arc<crate::executor::WorkerPool>,
    /// How often pool sessions are pinged; a session silent for three pings
    /// is closed and its attempts are retried.
    pub ping_interval: Duration,
    /// Streaming readers (`FollowTaskLogs`, `WatchRun`) wait on it for
    /// committed changes, and stop with the server.
    pub events: events::EventHub,
    /// What `/metrics` serves.
    pub metrics: crate::metrics::Metrics,
    /// `--schedule-to-start-timeout`, shown in the reason a task nobody
    /// serves is pending.
    pub schedule_to_start_timeout: Option<Duration>,
    /// Credentials and tokens (the token service manages them).
    pub auth: Arc<crate::auth::Auth>,
    /// Bounds on what clients send.
    pub limits: crate::options::ClientLimits,
    /// Resolves `secret`/`from_env` values; a deploy is checked against its
    /// `from_env` allow-list.
    pub secrets: Arc<crate::secrets::Secrets>,
}

/// Every gRPC service of the server, plus health and reflection.
pub fn routes(ctx: ApiContext) -> Result<tonic::service::Routes, tonic_reflection::server::Error> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    // Serving from the start: the stores are open before the listener is.
    drop(health_reporter);
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(DESCRIPTOR_SETS[0])
        .register_encoded_file_descriptor_set(DESCRIPTOR_SETS[1])
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(DESCRIPTOR_SETS[0])
        .register_encoded_file_descriptor_set(DESCRIPTOR_SETS[1])
        .build_v1alpha()?;
    // Every request message is bounded by the one option; replies carry
    // task files and outputs up to the same size.
    let max = ctx.limits.max_message_bytes;
    let mut routes = tonic::service::Routes::default();
    routes = routes
        .add_service(
            WorkflowServiceServer::new(WorkflowApi { ctx: ctx.clone() })
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            RunServiceServer::new(RunApi { ctx: ctx.clone() })
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            EventServiceServer::new(EventApi { ctx: ctx.clone() })
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            ScheduleServiceServer::new(ScheduleApi { ctx: ctx.clone() })
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            TokenServiceServer::new(TokenApi { ctx: ctx.clone() })
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            PoolServiceServer::new(PoolApi { ctx: ctx.clone() })
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            WorkerServiceServer::new(WorkerApi { ctx })
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    Ok(routes)
}
