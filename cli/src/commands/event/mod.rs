//! `ork event ...`: publish events that start the runs of subscribed
//! workflows (`on: {event: NAME}`).

pub mod send;

use clap::Subcommand;

use super::Context;

#[derive(Debug, Subcommand)]
pub enum EventCommand {
    /// Publish an event: one run of every subscribed workflow, once per id.
    Send(send::SendArgs),
}

pub async fn run(cmd: EventCommand, ctx: &Context) -> anyhow::Result<()> {
    match cmd {
        EventCommand::Send(args) => send::run(args, ctx).await,
    }
}
