//! `ork dev`: a complete server on a laptop (SQLite and a local folder under
//! `--data-dir`), optionally deploying workflows as it starts.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use ork_server::{DEFAULT_LISTEN, ServerOptions};

use super::Context;
use super::server::{SecurityArgs, TuningArgs, serve};
use crate::paths;

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Address to serve on; port 0 picks a free one (printed at start).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Folder for the database, the object mirror and task working
    /// directories, relative to where `ork dev` starts.
    #[arg(long, default_value = ".ork", value_name = "DIR")]
    data_dir: PathBuf,
    /// Object store for the mirror instead of DIR/objects: `file:///PATH`,
    /// `s3://BUCKET/PREFIX`, `gs://...`, `az://...` or `memory://`.
    #[arg(long = "objects", value_name = "URL")]
    objects_url: Option<String>,
    /// Require API tokens, as `ork server` does (the first start prints an
    /// admin token). Without it, `ork dev` serves only on a loopback address.
    #[arg(long, conflicts_with = "insecure_no_auth")]
    auth: bool,
    #[command(flatten)]
    security: SecurityArgs,
    #[command(flatten)]
    tuning: TuningArgs,
    /// Workflow YAML files to deploy once the server is up.
    #[arg(value_name = "FILES")]
    files: Vec<PathBuf>,
}

pub async fn run(args: DevArgs, ctx: &Context) -> anyhow::Result<()> {
    let telemetry = args.tuning.telemetry()?;
    // Every path is made absolute here, once: the server hands them to
    // processes that run in other directories.
    let cwd = paths::current_dir()?;
    let data_dir = paths::absolute(&args.data_dir, &cwd);
    let mut options = ServerOptions::embedded(&data_dir, args.listen);
    options.spans = telemetry.spans.clone();
    if let Some(url) = &args.objects_url {
        options.objects_url = paths::absolute_objects_url(url, &cwd);
    }
    args.security.apply(&mut options, args.auth, &cwd);
    args.tuning.apply(&mut options, &cwd)?;
    let files: Vec<PathBuf> = args
        .files
        .iter()
        .map(|f| paths::absolute(f, &cwd))
        .collect();
    let shown = args.data_dir.display().to_string();
    let objects = args
        .objects_url
        .as_ref()
        .map(|_| {
            format!(
                ", objects in {}",
                super::server::redact_url(&options.objects_url)
            )
        })
        .unwrap_or_default();
    serve(
        options,
        &data_dir,
        |url| format!("ork dev listening on {url} (data in {shown}{objects})"),
        &files,
        ctx,
    )
    .await
}
