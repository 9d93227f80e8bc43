//! `ork worker list`: the attached pool workers (`PoolService.ListWorkers`).

use ork_proto::v1::ListWorkersRequest;

use crate::commands::Context;
use crate::output::{self, OutputFormat};

pub async fn run(ctx: &Context) -> anyhow::Result<()> {
    let client = ctx.connect().await?;
    let workers = client
        .pool
        .clone()
        .list_workers(ListWorkersRequest {})
        .await?
        .into_inner()
        .workers;
    match ctx.output {
        // A bare array, like `ork workflow list`.
        OutputFormat::Json => output::print_json(&workers),
        OutputFormat::Table => output::emit(&output::render_worker_list(
            &workers,
            chrono::Utc::now(),
            ctx.style,
        )),
    }
}
