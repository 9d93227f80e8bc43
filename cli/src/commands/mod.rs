//! The command tree of `ork`: one module per noun, one file per verb.

mod completions;
mod dev;
mod event;
mod run;
mod schedule;
mod schema;
mod server;
mod token;
mod worker;
mod workflow;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use ork_worker::ConnectOptions;

use crate::client::{self, Client};
use crate::output::{ColorChoice, OutputFormat, Style};

/// Workflow orchestrator: deploy YAML workflows, start and watch runs.
///
/// Start a local server with `ork dev [WORKFLOW.yaml...]`, then, from
/// another terminal, `ork run start NAME --wait`. Exit codes: 0 ok, 1 the run
/// failed or the server refused, 2 bad input, 3 server unreachable.
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
    /// When to colour output: `auto` on a terminal unless NO_COLOR is set
    /// (CLICOLOR_FORCE=1 forces it), `always`, or `never`.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    color: ColorChoice,
    /// API token sent with every call (`ork token create` makes one).
    #[arg(long, global = true, env = "ORK_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM file of the CA (or self-signed certificate) to trust for an
    /// https:// server; default: the system's roots.
    #[arg(long, global = true, env = "ORK_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// PEM client certificate, for servers that require mutual TLS.
    #[arg(long, global = true, env = "ORK_CLIENT_CERT", value_name = "FILE")]
    client_cert: Option<PathBuf>,
    /// The key of --client-cert.
    #[arg(long, global = true, env = "ORK_CLIENT_KEY", value_name = "FILE")]
    client_key: Option<PathBuf>,
    /// Name to check the server's certificate for, when it differs from the
    /// host in --server.
    #[arg(long, global = true, env = "ORK_TLS_SERVER_NAME", value_name = "NAME")]
    tls_server_name: Option<String>,
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
    /// Publish events that start the runs of subscribed workflows.
    #[command(subcommand)]
    Event(event::EventCommand),
    /// List, pause, resume, trigger and backfill workflow schedules.
    #[command(subcommand)]
    Schedule(schedule::ScheduleCommand),
    /// See the pool workers attached to the server.
    #[command(subcommand)]
    Worker(worker::WorkerCommand),
    /// Create, list and revoke API tokens (admin).
    #[command(subcommand)]
    Token(token::TokenCommand),
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
    /// How to colour stdout (data).
    pub style: Style,
    /// How to colour stderr (progress and messages).
    pub err_style: Style,
    /// Token and TLS settings.
    pub connect: ConnectOptions,
}

impl Context {
    pub async fn connect(&self) -> anyhow::Result<Client> {
        client::connect(&self.server, &self.connect).await
    }
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let nonempty = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
    let ctx = Context {
        server: cli.global.server,
        output: cli.global.output,
        style: Style::for_stdout(cli.global.color),
        err_style: Style::for_stderr(cli.global.color),
        connect: ConnectOptions {
            token: nonempty(cli.global.token).map(|t| t.trim().to_owned()),
            ca_cert: cli.global.ca_cert.filter(|p| !p.as_os_str().is_empty()),
            client_cert: cli.global.client_cert.filter(|p| !p.as_os_str().is_empty()),
            client_key: cli.global.client_key.filter(|p| !p.as_os_str().is_empty()),
            server_name: nonempty(cli.global.tls_server_name),
        },
    };
    // The server commands set up their own logs and trace export.
    if !matches!(cli.command, Command::Dev(_) | Command::Server(_)) {
        crate::telemetry::init_client();
    }
    match cli.command {
        Command::Dev(args) => dev::run(args, &ctx).await,
        Command::Server(args) => server::run(args, &ctx).await,
        Command::Workflow(cmd) => workflow::run(cmd, &ctx).await,
        Command::Run(cmd) => run::run(cmd, &ctx).await,
        Command::Event(cmd) => event::run(cmd, &ctx).await,
        Command::Schedule(cmd) => schedule::run(cmd, &ctx).await,
        Command::Worker(cmd) => worker::run(cmd, &ctx).await,
        Command::Token(cmd) => token::run(cmd, &ctx).await,
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
