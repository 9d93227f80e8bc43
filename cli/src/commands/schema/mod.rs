//! `ork schema ...`: the workflow YAML's JSON Schema, for editors and CI.

pub mod export;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Write the JSON Schema of workflow YAML to FILE (`-` for stdout).
    Export(export::ExportArgs),
}

pub async fn run(cmd: SchemaCommand) -> anyhow::Result<()> {
    match cmd {
        SchemaCommand::Export(args) => export::run(args),
    }
}
