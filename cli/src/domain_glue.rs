//! The CLI's only calls into `ork_domain`: local validation before deploy,
//! and the workflow JSON Schema.
//!
//! TEMPORARY: `ork_domain::parse` and `ork_domain::schema` are still being
//! written. Until they land, `check_workflow` skips validation (the server
//! still validates) and finds task files with a line scan, and the schema is
//! a placeholder. Once they exist, swap in the bodies in the comments.

use std::collections::BTreeMap;

/// A file that tasks reference, keyed by the path as written in the YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    pub path: String,
    /// Tasks that reference it, to name them when the file is missing.
    pub tasks: Vec<String>,
}

/// Parses and validates `yaml` locally; on success returns the files its
/// tasks reference, on failure the validation errors, one per line.
pub fn check_workflow(yaml: &str, source: &str) -> Result<Vec<FileRef>, String> {
    // Once `ork_domain::parse` exists:
    //
    // use ork_domain::parse::{ParseOptions, parse_workflow, referenced_files};
    // let definition = parse_workflow(yaml, &ParseOptions { source, files: None })
    //     .map_err(|errors| errors.to_string())?;
    // let mut by_path: BTreeMap<String, Vec<String>> =
    //     referenced_files(&definition).into_iter().map(|p| (p, Vec::new())).collect();
    // for task in &definition.tasks {
    //     for path in task.file.iter().chain(&task.config_file) {
    //         by_path.entry(path.clone()).or_default().push(task.name.clone());
    //     }
    // }
    // return Ok(by_path.into_iter().map(|(path, tasks)| FileRef { path, tasks }).collect());
    let _ = source;
    let mut by_path: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in yaml.lines() {
        let line = line.trim_start().trim_start_matches("- ");
        for key in ["file:", "config_file:"] {
            if let Some(value) = line.strip_prefix(key) {
                let value = value.split(" #").next().unwrap_or_default().trim();
                let value = value.trim_matches(|c| c == '"' || c == '\'');
                if !value.is_empty() {
                    by_path.entry(value.to_owned()).or_default();
                }
            }
        }
    }
    Ok(by_path
        .into_iter()
        .map(|(path, tasks)| FileRef { path, tasks })
        .collect())
}

/// The JSON Schema of workflow YAML, for editors.
pub fn workflow_json_schema() -> serde_json::Value {
    // Once `ork_domain::schema` exists:
    // ork_domain::schema::workflow_json_schema()
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "ork workflow",
        "type": "object",
        "required": ["name", "tasks"]
    })
}
