//! `ork schema export FILE`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use crate::domain_glue;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Where to write the schema; `-` writes to stdout.
    file: PathBuf,
}

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(&domain_glue::workflow_json_schema())?;
    text.push('\n');
    if args.file.as_os_str() == "-" {
        crate::output::emit(&text)?;
    } else {
        std::fs::write(&args.file, text)
            .with_context(|| format!("cannot write {}", args.file.display()))?;
        eprintln!("wrote the workflow schema to {}", args.file.display());
    }
    Ok(())
}
