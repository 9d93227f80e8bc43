//! Connecting to an ork server, with an error that says how to get one.

use ork_proto::v1::event_service_client::EventServiceClient;
use ork_proto::v1::pool_service_client::PoolServiceClient;
use ork_proto::v1::run_service_client::RunServiceClient;
use ork_proto::v1::schedule_service_client::ScheduleServiceClient;
use ork_proto::v1::token_service_client::TokenServiceClient;
use ork_proto::v1::workflow_service_client::WorkflowServiceClient;
use ork_worker::connect::{AuthChannel, ConnectOptions, normalize_url};
use tonic::service::interceptor::InterceptedService;

use crate::error::{Unreachable, usage};

/// Largest message sent or received (a deploy carries task files).
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// gRPC clients of one server, sharing one HTTP/2 connection, each call
/// carrying the token.
#[derive(Clone)]
pub struct Client {
    pub workflows: WorkflowServiceClient<AuthChannel>,
    pub runs: RunServiceClient<AuthChannel>,
    pub tokens: TokenServiceClient<AuthChannel>,
    pub pool: PoolServiceClient<AuthChannel>,
    pub schedules: ScheduleServiceClient<AuthChannel>,
    pub events: EventServiceClient<AuthChannel>,
}

/// Connects eagerly, so an unreachable server is reported once, up front,
/// as exit code 3 rather than as the first call's transport error. Bad
/// settings (an unreadable CA file, an `http://` URL with TLS settings) are
/// usage errors.
pub async fn connect(server: &str, options: &ConnectOptions) -> anyhow::Result<Client> {
    let url = normalize_url(server);
    let endpoint = options
        .endpoint(&url)
        .map_err(|e| usage(format!("cannot connect to {server:?}: {e}")))?
        .connect_timeout(std::time::Duration::from_secs(5));
    let bearer = options.bearer().map_err(|e| usage(e.to_string()))?;
    let channel = endpoint.connect().await.map_err(|e| {
        anyhow::Error::new(Unreachable {
            server: url.clone(),
            detail: transport_detail(&e),
        })
    })?;
    let channel = InterceptedService::new(channel, bearer);
    Ok(Client {
        workflows: WorkflowServiceClient::new(channel.clone())
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
            .max_decoding_message_size(MAX_MESSAGE_BYTES),
        runs: RunServiceClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES),
        tokens: TokenServiceClient::new(channel.clone()),
        pool: PoolServiceClient::new(channel.clone()),
        schedules: ScheduleServiceClient::new(channel.clone()),
        events: EventServiceClient::new(channel),
    })
}

/// The innermost cause ("Connection refused", "invalid peer certificate")
/// is what tells the user most; tonic's own top-level text is just
/// "transport error".
fn transport_detail(err: &tonic::transport::Error) -> String {
    let mut source: &dyn std::error::Error = err;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}
