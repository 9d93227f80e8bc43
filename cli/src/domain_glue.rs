//! The CLI's only calls into `ork_domain`: local validation before deploy,
//! and the workflow JSON Schema. Kept in one place so a change of the domain
//! API touches one file.

use ork_domain::parse::{ParseLimits, ParseOptions, parse_workflow, referenced_files};

/// A file that tasks reference, keyed by the path as written in the YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    pub path: String,
    /// Tasks that reference it, to name them when the file is missing.
    pub tasks: Vec<String>,
}

/// Parses and validates `yaml` locally (`base_dir` is the workflow file's
/// absolute folder); on success returns the files its tasks reference (in
/// task order), on failure the validation errors, one per line. File
/// contents are not checked here: the caller reads them.
pub fn check_workflow(yaml: &str, source: &str, base_dir: &str) -> Result<Vec<FileRef>, String> {
    let definition = parse_workflow(
        yaml,
        &ParseOptions {
            source,
            files: None,
            base_dir: Some(base_dir),
            // The server applies its own, configurable limits; checking the
            // defaults here would refuse what a server allows.
            limits: ParseLimits {
                max_bytes: usize::MAX,
                max_depth: ork_domain::parse::MAX_YAML_DEPTH,
                max_nodes: 10_000_000,
                max_tasks: usize::MAX,
            },
        },
    )
    .map_err(|errors| errors.to_string())?;
    let files = referenced_files(&definition)
        .into_iter()
        .map(|path| {
            let tasks = definition
                .tasks
                .iter()
                .filter(|t| {
                    t.file.as_deref() == Some(&path) || t.config_file.as_deref() == Some(&path)
                })
                .map(|t| t.name.clone())
                .collect();
            FileRef { path, tasks }
        })
        .collect();
    Ok(files)
}

/// The JSON Schema of workflow YAML, for editors.
pub fn workflow_json_schema() -> serde_json::Value {
    ork_domain::schema::workflow_json_schema()
}
