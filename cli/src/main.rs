//! `ork`: the command-line client of an ork server, and `ork dev` /
//! `ork server`, which embed the server itself.

mod client;
mod commands;
mod domain_glue;
mod error;
mod output;
mod paths;
mod progress;
mod telemetry;

use std::process::ExitCode;

use clap::Parser as _;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = commands::Cli::parse();
    match commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => error::report(&err),
    }
}
