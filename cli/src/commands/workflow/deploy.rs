//! `ork workflow deploy PATH`: validate locally, then send the YAML, its
//! task files and its folder in one `DeployWorkflow` call.
//!
//! The folder (`base_dir`) is what relative `python` and `command` paths of
//! subprocess tasks (`.venv/bin/python`) resolve against, so a workflow can
//! name the virtualenv next to it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::Args;
use ork_proto::v1::{DeployWorkflowRequest, DeployWorkflowResponse};

use crate::client::Client;
use crate::commands::Context;
use crate::domain_glue::{self, FileRef};
use crate::error::usage;
use crate::output::{self, OutputFormat};

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The workflow YAML file.
    path: PathBuf,
    /// What changed, shown by `ork workflow versions` (at most 1,000 bytes).
    #[arg(long, short = 'm')]
    message: Option<String>,
}

pub async fn run(args: DeployArgs, ctx: &Context) -> anyhow::Result<()> {
    // Read and validate before connecting: a bad file is the user's to fix
    // whether or not a server is running.
    let mut request = build_request(&args.path)?;
    request.message = args.message.unwrap_or_default();
    let client = ctx.connect().await?;
    let response = send(&client, request).await?;
    announce(&response);
    let workflow = response.workflow.unwrap_or_default();
    match ctx.output {
        OutputFormat::Json => output::print_json(&workflow)?,
        OutputFormat::Table => output::emit_line(&workflow.name)?,
    }
    Ok(())
}

/// Validates and deploys one file; shared with `ork dev FILES...`.
pub async fn deploy_path(client: &Client, path: &Path) -> anyhow::Result<DeployWorkflowResponse> {
    let request = build_request(path)?;
    send(client, request).await
}

/// Tells the user on stderr what the deploy did.
pub fn announce(response: &DeployWorkflowResponse) {
    let Some(workflow) = &response.workflow else {
        return;
    };
    let version = workflow.version.get(..12).unwrap_or(&workflow.version);
    if response.created {
        eprintln!("deployed {} version {version}", workflow.name);
    } else {
        eprintln!("{} unchanged (version {version})", workflow.name);
    }
}

async fn send(
    client: &Client,
    request: DeployWorkflowRequest,
) -> anyhow::Result<DeployWorkflowResponse> {
    // Server-side validation errors come back as INVALID_ARGUMENT with
    // messages meant for the user; they are reported as they are.
    Ok(client
        .workflows
        .clone()
        .deploy_workflow(request)
        .await?
        .into_inner())
}

fn build_request(path: &Path) -> anyhow::Result<DeployWorkflowRequest> {
    let yaml = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
    let source = path.file_name().map_or_else(
        || path.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    );
    let cwd = crate::paths::current_dir()?;
    let folder = crate::paths::absolute(path, &cwd)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or(cwd);
    let base_dir = folder.to_str().map(str::to_owned).ok_or_else(|| {
        usage(format!(
            "the folder of {} is not valid UTF-8; move the workflow to a folder with a plain name",
            path.display()
        ))
    })?;
    let referenced = domain_glue::check_workflow(&yaml, &source, &base_dir).map_err(|errors| {
        let errors: Vec<String> = errors.lines().map(|line| format!("  {line}")).collect();
        usage(format!(
            "{source} is not a valid workflow:\n{}",
            errors.join("\n")
        ))
    })?;
    // Task files are written relative to the YAML, wherever `ork` runs from.
    let base = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let files = read_files(&base, &referenced)?;
    Ok(DeployWorkflowRequest {
        yaml,
        source,
        files,
        base_dir,
        message: String::new(),
    })
}

fn read_files(base: &Path, referenced: &[FileRef]) -> anyhow::Result<HashMap<String, Vec<u8>>> {
    let mut files = HashMap::new();
    for file in referenced {
        let resolved = base.join(&file.path);
        let bytes = std::fs::read(&resolved).map_err(|e| {
            let shown = std::path::absolute(&resolved).unwrap_or_else(|_| resolved.clone());
            let owner = match file.tasks.as_slice() {
                [] => "the workflow".to_owned(),
                [task] => format!("task `{task}`"),
                tasks => format!("tasks {}", tasks.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ")),
            };
            usage(format!(
                "{owner}, field `file`: cannot read `{}` at {}: {e}; paths are relative to the workflow file",
                file.path,
                shown.display()
            ))
        })?;
        files.insert(file.path.clone(), bytes);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_task_file_names_the_task_and_both_paths() {
        let referenced = vec![FileRef {
            path: "scripts/extract.sh".into(),
            tasks: vec!["extract".into()],
        }];
        let err = read_files(Path::new("/nonexistent-ork-dir"), &referenced).unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with(
                "task `extract`, field `file`: cannot read `scripts/extract.sh` at \
                 /nonexistent-ork-dir/scripts/extract.sh: "
            ),
            "{message}"
        );
        assert!(err.downcast_ref::<crate::error::UsageError>().is_some());
    }
}
