//! `ork token revoke NAME`.

use clap::Args;
use ork_proto::v1::RevokeTokenRequest;

use crate::commands::Context;

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The token's name (or its id, from `ork token list`).
    name: String,
}

pub async fn run(args: RevokeArgs, ctx: &Context) -> anyhow::Result<()> {
    let client = ctx.connect().await?;
    let token = client
        .tokens
        .clone()
        .revoke_token(RevokeTokenRequest { name: args.name })
        .await?
        .into_inner()
        .token
        .unwrap_or_default();
    eprintln!(
        "revoked token `{}` ({}); it no longer works",
        token.name, token.id
    );
    Ok(())
}
