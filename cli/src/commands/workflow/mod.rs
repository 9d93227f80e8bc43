//! `ork workflow ...`: deploy and inspect workflow definitions.

pub mod delete;
pub mod deploy;
pub mod list;
pub mod rollback;
pub mod status;
pub mod versions;

use clap::Subcommand;

use super::Context;

#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Validate a workflow YAML and deploy it with the files its tasks reference.
    Deploy(deploy::DeployArgs),
    /// List deployed workflows.
    List,
    /// Show a workflow's tasks and its recent runs.
    Status(status::StatusArgs),
    /// Delete a workflow (its past runs stay readable).
    Delete(delete::DeleteArgs),
    /// List a workflow's deployed versions, newest first.
    Versions(versions::VersionsArgs),
    /// Make an earlier version current again (runs keep their version).
    Rollback(rollback::RollbackArgs),
}

pub async fn run(cmd: WorkflowCommand, ctx: &Context) -> anyhow::Result<()> {
    match cmd {
        WorkflowCommand::Deploy(args) => deploy::run(args, ctx).await,
        WorkflowCommand::List => list::run(ctx).await,
        WorkflowCommand::Status(args) => status::run(args, ctx).await,
        WorkflowCommand::Delete(args) => delete::run(args, ctx).await,
        WorkflowCommand::Versions(args) => versions::run(args, ctx).await,
        WorkflowCommand::Rollback(args) => rollback::run(args, ctx).await,
    }
}
