//! `ork run status ID [--watch]`: a run and each of its task instances, and
//! why each pending one waits.

use clap::Args;
use ork_proto::v1::{GetRunRequest, Run};

use crate::commands::Context;
use crate::output::{self, OutputFormat};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The run's id.
    id: String,
    /// Read the run from this object store (`s3://BUCKET/PREFIX`, `gs://...`,
    /// `az://...`, `file:///PATH`) instead of asking a server; cloud settings
    /// come from the usual AWS_*, GOOGLE_* and AZURE_* variables.
    #[arg(long, value_name = "URL", conflicts_with = "watch")]
    from_objects: Option<String>,
    /// Follow the run until it ends, showing its progress on stderr, then
    /// print it and exit 1 unless it succeeded.
    #[arg(long, short = 'w')]
    watch: bool,
}

pub async fn run(args: StatusArgs, ctx: &Context) -> anyhow::Result<()> {
    if let Some(url) = &args.from_objects {
        let settings = ork_server::objects::settings_from_vars(std::env::vars());
        let url = crate::paths::absolute_objects_url(url, &crate::paths::current_dir()?);
        let store = ork_server::objects::open(&url, &settings)?;
        let run = ork_server::objects::read_run(store.as_ref(), &args.id).await?;
        return print_run(&run, ctx);
    }
    let client = ctx.connect().await?;
    if args.watch {
        return super::wait_and_report(&client, &args.id, ctx).await;
    }
    let run = client
        .runs
        .clone()
        .get_run(GetRunRequest { id: args.id })
        .await?
        .into_inner()
        .run;
    print_run(&run.unwrap_or_default(), ctx)
}

/// Prints a run as `ork run status` does; also used by `--wait`.
pub fn print_run(run: &Run, ctx: &Context) -> anyhow::Result<()> {
    match ctx.output {
        OutputFormat::Json => output::print_json(run),
        OutputFormat::Table => {
            output::emit(&output::render_run(run, chrono::Utc::now(), ctx.style))
        }
    }
}
