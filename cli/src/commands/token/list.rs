//! `ork token list`: every token and whether it still works.

use chrono::Utc;
use ork_proto::v1::ListTokensRequest;

use crate::commands::Context;
use crate::output::{self, OutputFormat};

pub async fn run(ctx: &Context) -> anyhow::Result<()> {
    let client = ctx.connect().await?;
    let tokens = client
        .tokens
        .clone()
        .list_tokens(ListTokensRequest {})
        .await?
        .into_inner()
        .tokens;
    match ctx.output {
        // A bare array, as `ork workflow list -o json` prints.
        OutputFormat::Json => output::print_json(&tokens),
        OutputFormat::Table => {
            output::emit(&output::render_token_list(&tokens, Utc::now(), ctx.style))
        }
    }
}
