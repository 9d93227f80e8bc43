//! `ork run cancel ID`.

use clap::Args;
use ork_proto::v1::CancelRunRequest;

use crate::commands::Context;
use crate::output::{self, OutputFormat};

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The run's id.
    id: String,
}

pub async fn run(args: CancelArgs, ctx: &Context) -> anyhow::Result<()> {
    let client = ctx.connect().await?;
    let run = client
        .runs
        .clone()
        .cancel_run(CancelRunRequest { id: args.id })
        .await?
        .into_inner()
        .run;
    let run = run.unwrap_or_default();
    eprintln!("run {} {}", run.id, run.status);
    if ctx.output == OutputFormat::Json {
        output::print_json(&run)?;
    }
    Ok(())
}
