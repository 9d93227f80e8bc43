//! `ork.v1.PoolService`: the pool workers attached to this server.

use ork_proto::v1::{self, pool_service_server::PoolService};
use tonic::{Request, Response, Status};

use super::ApiContext;
use super::convert::timestamp;

pub struct PoolApi {
    pub(crate) ctx: ApiContext,
}

#[tonic::async_trait]
impl PoolService for PoolApi {
    async fn list_workers(
        &self,
        _request: Request<v1::ListWorkersRequest>,
    ) -> Result<Response<v1::ListWorkersResponse>, Status> {
        let workers = self
            .ctx
            .pool
            .list()
            .into_iter()
            .map(|s| v1::PoolWorker {
                session_id: s.id.to_string(),
                name: s.name,
                handlers: s.handlers,
                slots: s.slots,
                slots_in_use: s.in_use,
                draining: s.draining,
                attached_at: Some(timestamp(s.attached_at)),
                last_seen_at: Some(timestamp(s.last_seen)),
                server: self.ctx.owner.clone(),
            })
            .collect();
        Ok(Response::new(v1::ListWorkersResponse { workers }))
    }
}
