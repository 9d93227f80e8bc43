//! `ork token ...`: the API tokens clients authenticate with (admin only).

pub mod create;
pub mod list;
pub mod revoke;

use clap::Subcommand;

use super::Context;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token and print it, once (the server keeps only a hash).
    Create(create::CreateArgs),
    /// List tokens, revoked and expired ones included (never their secrets).
    List,
    /// Revoke a token: it stops working at once.
    Revoke(revoke::RevokeArgs),
}

pub async fn run(cmd: TokenCommand, ctx: &Context) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create(args) => create::run(args, ctx).await,
        TokenCommand::List => list::run(ctx).await,
        TokenCommand::Revoke(args) => revoke::run(args, ctx).await,
    }
}
