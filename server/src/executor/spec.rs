//! Builds the `TaskSpec` a worker runs an attempt from, from the spec the
//! store read and the server's secrets: the same for launched workers (who
//! fetch it) and pool workers (who are pushed it).

use std::time::Duration;

use ork_proto::json::to_proto;
use ork_proto::v1;

use crate::secrets::Secrets;
use crate::state::AttemptSpec;

/// The spec, secrets resolved (and remembered, to mask the attempt's
/// reports). An `Err` is an env value that cannot be resolved; the message
/// names task, field and fix, and the attempt cannot run: fail it without
/// retrying.
pub fn build(
    spec: AttemptSpec,
    secrets: &Secrets,
    heartbeat_interval: Duration,
) -> Result<v1::TaskSpec, String> {
    let env = secrets.resolve_env(&spec.task_name, &spec.env)?;
    secrets.remember(&spec.task_run_id, &spec.env);
    let traceparent =
        crate::telemetry::attempt_traceparent(&spec.run_id, &spec.task_run_id, spec.attempt);
    Ok(v1::TaskSpec {
        run_id: spec.run_id,
        workflow: spec.workflow,
        task_name: spec.task_name,
        task_run_id: spec.task_run_id,
        attempt: spec.attempt,
        parallel_index: spec.parallel_index,
        parallel_count: spec.parallel_count,
        input: Some(to_proto(&spec.input)),
        env,
        timeout_seconds: spec.timeout_seconds,
        deadline: spec.deadline.map(ork_proto::time::to_proto),
        heartbeat_interval_seconds: u32::try_from(heartbeat_interval.as_secs())
            .unwrap_or(5)
            .max(1),
        file: spec.file.unwrap_or_default(),
        file_content: spec.file_content,
        config_file: spec.config_file.unwrap_or_default(),
        config_file_content: spec.config_file_content,
        handler: spec.handler.unwrap_or_default(),
        command: spec.command.unwrap_or_default(),
        python: spec.python.unwrap_or_default(),
        traceparent,
    })
}
