//! `ork`: the command-line client of an ork server, and `ork dev` /
//! `ork server`, which embed the server itself.

mod client;
mod commands;
mod domain_glue;
mod error;
mod output;
mod paths;
mod progress;

use std::process::ExitCode;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = commands::Cli::parse();
    init_tracing();
    match commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => error::report(&err),
    }
}

/// Logs go to stderr so they never mix with data on stdout; `RUST_LOG`
/// overrides the quiet default.
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
