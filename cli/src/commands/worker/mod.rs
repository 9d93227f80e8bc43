//! `ork worker ...`: the long-lived pool workers attached to the server.

pub mod list;

use clap::Subcommand;

use super::Context;

#[derive(Debug, Subcommand)]
pub enum WorkerCommand {
    /// List the pool workers attached to the server: their handlers, slots
    /// in use and when each was last heard from.
    List,
}

pub async fn run(cmd: WorkerCommand, ctx: &Context) -> anyhow::Result<()> {
    match cmd {
        WorkerCommand::List => list::run(ctx).await,
    }
}
