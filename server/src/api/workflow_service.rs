//! `ork.v1.WorkflowService`: deploy, get, list and delete workflows.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Utc;
use ork_domain::parse::{ParseOptions, parse_workflow, referenced_files};
use ork_proto::v1::{self, workflow_service_server::WorkflowService};
use tonic::{Request, Response, Status};

use super::ApiContext;
use super::convert;
use super::error::{ErrorKind, from_state, status};
use crate::state::{NewWorkflowVersion, WorkflowRecord};

/// Largest task file accepted by a deploy.
pub const MAX_FILE_BYTES: usize = 16 << 20;
/// Largest total of task files in one deploy.
pub const MAX_DEPLOY_BYTES: usize = 48 << 20;

pub struct WorkflowApi {
    pub(crate) ctx: ApiContext,
}

/// NOT_FOUND for a workflow name, with the closest deployed name.
pub(super) async fn workflow_not_found(ctx: &ApiContext, name: &str) -> Status {
    let names: Vec<String> = ctx
        .state
        .list_workflows()
        .await
        .map(|all| all.into_iter().map(|w| w.name).collect())
        .unwrap_or_default();
    let hint = ork_domain::suggest::closest(name, names.iter().map(String::as_str))
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default();
    status(
        ErrorKind::NotFound,
        format!("workflow `{name}` not found{hint}; `ork workflow list` shows the deployed ones"),
    )
}

impl WorkflowApi {
    /// `GetWorkflow` with a `version`: that immutable version, whether or not
    /// it is still the newest (or the workflow still exists). Its times are
    /// the version's deploy time.
    async fn get_version(
        &self,
        name: String,
        version: String,
    ) -> Result<Response<v1::GetWorkflowResponse>, Status> {
        let compiled = self
            .ctx
            .state
            .get_version(&version)
            .await
            .map_err(from_state)?
            .filter(|v| v.definition.name == name)
            .ok_or_else(|| {
                status(
                    ErrorKind::NotFound,
                    format!(
                        "field `version`: workflow `{name}` has no version `{version}`; a run's `workflow_version` names one"
                    ),
                )
            })?;
        let record = WorkflowRecord {
            name,
            created_at: compiled.created_at,
            updated_at: compiled.created_at,
            version: compiled,
        };
        Ok(Response::new(v1::GetWorkflowResponse {
            workflow: Some(convert::workflow(&record)),
        }))
    }
}

#[tonic::async_trait]
impl WorkflowService for WorkflowApi {
    async fn deploy_workflow(
        &self,
        request: Request<v1::DeployWorkflowRequest>,
    ) -> Result<Response<v1::DeployWorkflowResponse>, Status> {
        let req = request.into_inner();
        crate::state::versions::check_message(&req.message).map_err(from_state)?;
        let source = if req.source.is_empty() {
            "workflow.yaml".to_owned()
        } else {
            req.source
        };
        let provided: BTreeSet<String> = req.files.keys().cloned().collect();
        let definition = parse_workflow(
            &req.yaml,
            &ParseOptions {
                source: &source,
                files: Some(&provided),
                base_dir: (!req.base_dir.is_empty()).then_some(req.base_dir.as_str()),
                limits: self.ctx.limits.yaml,
            },
        )
        .map_err(|errors| status(ErrorKind::InvalidArgument, errors.to_string()))?;
        let unrunnable: Vec<String> = definition
            .tasks
            .iter()
            .filter_map(|task| {
                let fix = self.ctx.executors.why_unavailable(&task.executor)?;
                Some(format!(
                    "{source}: task `{}`, field `executor`: this server cannot run `{}` tasks: {fix}",
                    task.name, task.executor
                ))
            })
            .collect();
        if !unrunnable.is_empty() {
            return Err(status(ErrorKind::InvalidArgument, unrunnable.join("\n")));
        }
        let refused = self.ctx.secrets.allow_env().refusals(&definition);
        if !refused.is_empty() {
            let lines: Vec<String> = refused.iter().map(|r| format!("{source}: {r}")).collect();
            return Err(status(ErrorKind::InvalidArgument, lines.join("\n")));
        }

        let mut files = BTreeMap::new();
        let mut total = 0usize;
        for path in referenced_files(&definition) {
            let Some(content) = req.files.get(&path) else {
                continue;
            };
            if content.len() > MAX_FILE_BYTES {
                return Err(status(
                    ErrorKind::InvalidArgument,
                    format!(
                        "{source}: file `{path}` is {} bytes; task files are limited to {MAX_FILE_BYTES} bytes: keep large data in object storage and pass its location as input",
                        content.len()
                    ),
                ));
            }
            total += content.len();
            files.insert(path, content.clone());
        }
        if total > MAX_DEPLOY_BYTES {
            return Err(status(
                ErrorKind::InvalidArgument,
                format!(
                    "{source}: task files total {total} bytes, above the {MAX_DEPLOY_BYTES}-byte limit of one deploy"
                ),
            ));
        }
        // Paths resolved against the deploying folder are part of the content.
        let version =
            crate::hash::workflow_version_in(&req.yaml, definition.base_dir.as_deref(), &files);
        let (record, created) = self
            .ctx
            .state
            .deploy_workflow(
                NewWorkflowVersion {
                    version,
                    yaml: req.yaml,
                    definition,
                    files,
                },
                Utc::now(),
            )
            .await
            .map_err(from_state)?;
        if !req.message.is_empty() {
            // Its own small write after the version's: a message lost to a
            // crash in between is all that can go missing.
            self.ctx
                .state
                .set_version_message(&record.version.version, &req.message)
                .await
                .map_err(from_state)?;
        }
        Ok(Response::new(v1::DeployWorkflowResponse {
            workflow: Some(convert::workflow(&record)),
            created,
        }))
    }

    async fn get_workflow(
        &self,
        request: Request<v1::GetWorkflowRequest>,
    ) -> Result<Response<v1::GetWorkflowResponse>, Status> {
        let v1::GetWorkflowRequest { name, version } = request.into_inner();
        if !version.is_empty() {
            return self.get_version(name, version).await;
        }
        let record = self
            .ctx
            .state
            .get_workflow(&name)
            .await
            .map_err(from_state)?;
        let Some(record) = record else {
            return Err(workflow_not_found(&self.ctx, &name).await);
        };
        Ok(Response::new(v1::GetWorkflowResponse {
            workflow: Some(convert::workflow(&record)),
        }))
    }

    async fn list_workflows(
        &self,
        _request: Request<v1::ListWorkflowsRequest>,
    ) -> Result<Response<v1::ListWorkflowsResponse>, Status> {
        let records = self.ctx.state.list_workflows().await.map_err(from_state)?;
        Ok(Response::new(v1::ListWorkflowsResponse {
            workflows: records.iter().map(convert::workflow).collect(),
        }))
    }

    async fn delete_workflow(
        &self,
        request: Request<v1::DeleteWorkflowRequest>,
    ) -> Result<Response<v1::DeleteWorkflowResponse>, Status> {
        let name = request.into_inner().name;
        if !self
            .ctx
            .state
            .delete_workflow(&name)
            .await
            .map_err(from_state)?
        {
            return Err(workflow_not_found(&self.ctx, &name).await);
        }
        Ok(Response::new(v1::DeleteWorkflowResponse {}))
    }

    async fn list_workflow_versions(
        &self,
        request: Request<v1::ListWorkflowVersionsRequest>,
    ) -> Result<Response<v1::ListWorkflowVersionsResponse>, Status> {
        let name = request.into_inner().name;
        let versions = match self.ctx.state.list_versions(&name).await {
            Ok(versions) => versions,
            Err(crate::state::Error::NotFound { .. }) => {
                return Err(workflow_not_found(&self.ctx, &name).await);
            }
            Err(e) => return Err(from_state(e)),
        };
        Ok(Response::new(v1::ListWorkflowVersionsResponse {
            versions: versions
                .iter()
                .map(|v| v1::WorkflowVersion {
                    version: v.version.clone(),
                    created_at: Some(convert::timestamp(v.created_at)),
                    message: v.message.clone(),
                    current: v.current,
                })
                .collect(),
        }))
    }

    async fn rollback_workflow(
        &self,
        request: Request<v1::RollbackWorkflowRequest>,
    ) -> Result<Response<v1::RollbackWorkflowResponse>, Status> {
        let v1::RollbackWorkflowRequest { name, version } = request.into_inner();
        if self
            .ctx
            .state
            .get_workflow(&name)
            .await
            .map_err(from_state)?
            .is_none()
        {
            return Err(workflow_not_found(&self.ctx, &name).await);
        }
        let record = self
            .ctx
            .state
            .rollback_workflow(&name, &version, Utc::now())
            .await
            .map_err(from_state)?;
        tracing::info!(workflow = %name, version = %record.version.version, "workflow rolled back");
        Ok(Response::new(v1::RollbackWorkflowResponse {
            workflow: Some(convert::workflow(&record)),
        }))
    }
}
