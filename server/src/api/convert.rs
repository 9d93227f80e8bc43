//! Conversions from workflow and log records to proto messages. Pure
//! functions. Runs and task runs, which the mirror shows too, are
//! converted in [`crate::views`].

use ork_domain::Parallelism;
use ork_proto::json::to_proto;
use ork_proto::v1;

use crate::state::{LogRecord, WorkflowRecord};

pub use ork_proto::time::to_proto as timestamp;

fn opt_timestamp(t: Option<chrono::DateTime<chrono::Utc>>) -> Option<pbjson_types::Timestamp> {
    t.map(timestamp)
}

pub fn workflow(record: &WorkflowRecord) -> v1::Workflow {
    let version = &record.version;
    v1::Workflow {
        name: record.name.clone(),
        version: version.version.clone(),
        schedule: version.definition.schedule.clone().unwrap_or_default(),
        tasks: version
            .definition
            .tasks
            .iter()
            .map(|t| v1::WorkflowTask {
                name: t.name.clone(),
                executor: t.executor.clone(),
                depends_on: t.depends_on.clone(),
                parallel: match &t.parallel {
                    None => String::new(),
                    Some(Parallelism::Static(n)) => n.to_string(),
                    Some(Parallelism::CountRef(r)) => {
                        format!("count: {}.{}", r.task, r.path.join("."))
                    }
                    Some(Parallelism::ForEach(r)) => {
                        format!("for_each: {}.{}", r.task, r.path.join("."))
                    }
                },
                file: t.file.clone().unwrap_or_default(),
                retries: t.retries,
                timeout_seconds: t.timeout_seconds,
                handler: t.handler.clone().unwrap_or_default(),
                command: t.command.clone().unwrap_or_default(),
                python: t.python.clone().unwrap_or_default(),
            })
            .collect(),
        created_at: Some(timestamp(record.created_at)),
        updated_at: Some(timestamp(record.updated_at)),
        definition_yaml: version.yaml.clone(),
        inputs: version
            .definition
            .inputs
            .iter()
            .flatten()
            .map(|i| v1::WorkflowInput {
                name: i.name.clone(),
                schema: Some(to_proto(&i.schema)),
                required: i.required,
                default_value: (!i.required)
                    .then(|| to_proto(i.default.as_ref().unwrap_or(&serde_json::Value::Null))),
                description: i.description.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

pub fn log_line(l: &LogRecord) -> v1::LogLine {
    v1::LogLine {
        task: l.task_name.clone(),
        parallel_index: l.parallel_index,
        attempt: l.attempt,
        stream: l.stream.clone(),
        line: l.line.clone(),
        time: Some(timestamp(l.time)),
    }
}

pub fn token(record: &crate::state::tokens::TokenRecord) -> v1::Token {
    v1::Token {
        id: record.id.clone(),
        name: record.name.clone(),
        role: record.role.as_str().to_owned(),
        created_at: Some(timestamp(record.created_at)),
        expires_at: opt_timestamp(record.expires_at),
        revoked_at: opt_timestamp(record.revoked_at),
        created_by: record.created_by.clone().unwrap_or_default(),
    }
}
