//! `ork schedule ...`: the schedules of deployed workflows (a workflow with
//! `schedule:` has one): list, pause, resume, trigger and backfill.

pub mod backfill;
pub mod list;
pub mod pause;
pub mod trigger;

use clap::Subcommand;

use super::Context;

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// List schedules: workflow, cron, zone, next fires, paused.
    List(list::ListArgs),
    /// Stop a schedule from firing (on every replica, across restarts).
    Pause(pause::PauseArgs),
    /// Let a paused schedule fire again, from now on.
    Resume(pause::PauseArgs),
    /// Start one run now, as the schedule would (`scheduled_for` = now).
    Trigger(trigger::TriggerArgs),
    /// Create one run per fire in a past range that has none yet.
    Backfill(backfill::BackfillArgs),
}

pub async fn run(cmd: ScheduleCommand, ctx: &Context) -> anyhow::Result<()> {
    match cmd {
        ScheduleCommand::List(args) => list::run(args, ctx).await,
        ScheduleCommand::Pause(args) => pause::run(args, true, ctx).await,
        ScheduleCommand::Resume(args) => pause::run(args, false, ctx).await,
        ScheduleCommand::Trigger(args) => trigger::run(args, ctx).await,
        ScheduleCommand::Backfill(args) => backfill::run(args, ctx).await,
    }
}
