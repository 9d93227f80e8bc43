//! `ork dev`: a complete server on a laptop (SQLite and a local folder under
//! `--data-dir`), optionally deploying workflows as it starts.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use ork_server::{DEFAULT_LISTEN, ServerOptions};

use super::server::{TuningArgs, serve};

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Address to serve on; port 0 picks a free one (printed at start).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Folder for the database, the object mirror and task working directories.
    #[arg(long, default_value = ".ork", value_name = "DIR")]
    data_dir: PathBuf,
    #[command(flatten)]
    tuning: TuningArgs,
    /// Workflow YAML files to deploy once the server is up.
    #[arg(value_name = "FILES")]
    files: Vec<PathBuf>,
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let telemetry = args.tuning.telemetry()?;
    let mut options = ServerOptions::embedded(&args.data_dir, args.listen);
    options.spans = telemetry.spans.clone();
    args.tuning.apply(&mut options)?;
    let data_dir = args.data_dir.display().to_string();
    serve(
        options,
        &args.data_dir,
        |addr| format!("ork dev listening on http://{addr} (data in {data_dir})"),
        &args.files,
    )
    .await
}
