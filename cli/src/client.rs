//! Connecting to an ork server, with an error that says how to get one.

use std::time::Duration;

use ork_proto::v1::pool_service_client::PoolServiceClient;
use ork_proto::v1::run_service_client::RunServiceClient;
use ork_proto::v1::workflow_service_client::WorkflowServiceClient;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Unreachable, usage};

/// gRPC clients of one server, sharing one HTTP/2 connection.
#[derive(Clone)]
pub struct Client {
    pub workflows: WorkflowServiceClient<Channel>,
    pub runs: RunServiceClient<Channel>,
    pub pool: PoolServiceClient<Channel>,
}

/// Connects eagerly, so an unreachable server is reported once, up front,
/// as exit code 3 rather than as the first call's transport error.
pub async fn connect(server: &str) -> anyhow::Result<Client> {
    let url = normalize_url(server);
    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| usage(format!("invalid --server URL {server:?}: {e}")))?
        .connect_timeout(Duration::from_secs(5));
    let channel = endpoint.connect().await.map_err(|e| {
        anyhow::Error::new(Unreachable {
            server: url.clone(),
            detail: transport_detail(&e),
        })
    })?;
    Ok(Client {
        workflows: WorkflowServiceClient::new(channel.clone()),
        runs: RunServiceClient::new(channel.clone()),
        pool: PoolServiceClient::new(channel),
    })
}

/// Accepts `host:port` as well as a full URL, since that is what `ork dev`
/// users copy from its `--listen` flag.
fn normalize_url(server: &str) -> String {
    if server.contains("://") {
        server.to_owned()
    } else {
        format!("http://{server}")
    }
}

/// The innermost cause ("Connection refused") is what tells the user most;
/// tonic's own top-level text is just "transport error".
fn transport_detail(err: &tonic::transport::Error) -> String {
    let mut source: &dyn std::error::Error = err;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_address_gets_a_scheme() {
        assert_eq!(normalize_url("127.0.0.1:7400"), "http://127.0.0.1:7400");
        assert_eq!(
            normalize_url("https://ork.example:443"),
            "https://ork.example:443"
        );
    }
}
