//! The command tree of `ork`: one module per noun, one file per verb.

mod completions;
mod dev;
mod run;
mod schema;
mod server;
mod workflow;

use clap::{Args, Parser, Subcommand};

use crate::client::{self, Client};
use crate::output::{OutputFormat, Style};

/// Workflow orchestrator: deploy YAML workflows, start and watch runs.
#[derive(Debug, Parser)]
#[command(name = "ork", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Flags every subcommand accepts.
#[derive(Debug, Args)]
struct GlobalArgs {
    /// Address of the ork server.
    #[arg(
        long,
        global = true,
        env = "ORK_SERVER",
        default_value = "http://127.0.0.1:7400"
    )]
    server: String,
    /// How to print results: aligned tables for people, or JSON for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a local server with SQLite and a local folder, for development.
    Dev(dev::DevArgs),
    /// Run a server against explicit state and object stores.
    Server(server::ServerArgs),
    /// Deploy and inspect workflows.
    #[command(subcommand)]
    Workflow(workflow::WorkflowCommand),
    /// Start, watch and manage runs.
    #[command(subcommand)]
    Run(run::RunCommand),
    /// The JSON Schema of workflow YAML, for editors.
    #[command(subcommand)]
    Schema(schema::SchemaCommand),
    /// Print a shell completion script.
    Completions(completions::CompletionsArgs),
}

/// What every command needs from the command line besides its own arguments.
pub struct Context {
    pub server: String,
    pub output: OutputFormat,
    pub style: Style,
}

impl Context {
    pub async fn connect(&self) -> anyhow::Result<Client> {
        client::connect(&self.server).await
    }
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = Context {
        server: cli.global.server,
        output: cli.global.output,
        style: Style::detect(),
    };
    // The server commands set up their own logs and trace export.
    if !matches!(cli.command, Command::Dev(_) | Command::Server(_)) {
        crate::telemetry::init_client();
    }
    match cli.command {
        Command::Dev(args) => dev::run(args).await,
        Command::Server(args) => server::run(args).await,
        Command::Workflow(cmd) => workflow::run(cmd, &ctx).await,
        Command::Run(cmd) => run::run(cmd, &ctx).await,
        Command::Schema(cmd) => schema::run(cmd).await,
        Command::Completions(args) => completions::run(args),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
