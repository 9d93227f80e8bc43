//! `ork workflow list`: every deployed workflow, newest version each.

use ork_proto::v1::ListWorkflowsRequest;

use crate::commands::Context;
use crate::output::{self, OutputFormat};

pub async fn run(ctx: &Context) -> anyhow::Result<()> {
    let client = ctx.connect().await?;
    let workflows = client
        .workflows
        .clone()
        .list_workflows(ListWorkflowsRequest {})
        .await?
        .into_inner()
        .workflows;
    match ctx.output {
        // A bare array rather than `{"workflows": [...]}`: proto3 JSON drops
        // empty repeated fields, and `{}` would break `jq '.workflows[]'`.
        OutputFormat::Json => output::print_json(&workflows),
        OutputFormat::Table => output::emit(&output::render_workflow_list(&workflows, ctx.style)),
    }
}
