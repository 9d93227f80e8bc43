//! `ork.v1.ScheduleService`: list schedules with their next fires, pause and
//! resume them, fire one now, and backfill a past range.
//!
//! Pauses live in the store (`state::schedules`), read by the cron of every
//! replica. Backfilled fires go through the store's `fire_schedule`, the
//! same unique (workflow, fire time) key the cron uses, so a fire gets one
//! run whoever creates it, and a repeated backfill creates nothing new.

use chrono::{DateTime, SecondsFormat, Utc};
use ork_domain::TriggerType;
use ork_proto::v1::{self, schedule_service_server::ScheduleService};
use tonic::{Request, Response, Status};

use super::error::{ErrorKind, from_state, status};
use super::{ApiContext, RunApi, convert};
use crate::state::{NewRun, RunRecord, ScheduleState, WorkflowRecord};

/// Next fires shown per schedule when the request asks for none.
const DEFAULT_NEXT: u32 = 3;
/// Most next fires shown per schedule.
const MAX_NEXT: u32 = 20;

pub struct ScheduleApi {
    pub(crate) ctx: ApiContext,
}

fn schedule(
    workflow: &WorkflowRecord,
    last_fire: Option<DateTime<Utc>>,
    state: Option<&ScheduleState>,
    next: u32,
    now: DateTime<Utc>,
) -> v1::Schedule {
    let def = &workflow.version.definition;
    let paused = state.is_some_and(|s| s.paused);
    let next_fires = if paused {
        Vec::new()
    } else {
        ork_domain::schedule::next_fires(def, now, next as usize)
    };
    v1::Schedule {
        workflow: workflow.name.clone(),
        cron: def.schedule.clone().unwrap_or_default(),
        timezone: def.timezone.clone(),
        catchup: def.catchup.as_str().to_owned(),
        paused,
        state_changed_at: state.map(|s| convert::timestamp(s.changed_at)),
        next_fires: next_fires.into_iter().map(convert::timestamp).collect(),
        last_fire: last_fire.map(convert::timestamp),
    }
}

fn required(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Err(status(
            ErrorKind::InvalidArgument,
            format!("field `{field}`: required (the workflow whose schedule to use)"),
        ));
    }
    Ok(())
}

impl ScheduleApi {
    /// The workflow and its latest fire, or NOT_FOUND / FAILED_PRECONDITION
    /// naming what is wrong.
    async fn scheduled(
        &self,
        name: &str,
    ) -> Result<(WorkflowRecord, Option<DateTime<Utc>>), Status> {
        required("workflow", name)?;
        let found = self
            .ctx
            .state
            .scheduled_workflows()
            .await
            .map_err(from_state)?
            .into_iter()
            .find(|(w, _)| w.name == name);
        if let Some(found) = found {
            return Ok(found);
        }
        match self
            .ctx
            .state
            .get_workflow(name)
            .await
            .map_err(from_state)?
        {
            Some(_) => Err(status(
                ErrorKind::FailedPrecondition,
                format!(
                    "workflow `{name}` has no schedule; add `schedule:` (a cron expression) to its YAML and deploy it"
                ),
            )),
            None => Err(super::workflow_service::workflow_not_found(&self.ctx, name).await),
        }
    }

    async fn set_paused(&self, name: &str, paused: bool) -> Result<v1::Schedule, Status> {
        let (workflow, last_fire) = self.scheduled(name).await?;
        let now = Utc::now();
        let state = self
            .ctx
            .state
            .set_schedule_paused(name, paused, now)
            .await
            .map_err(from_state)?;
        tracing::info!(workflow = %name, paused, "schedule state set");
        Ok(schedule(
            &workflow,
            last_fire,
            Some(&state),
            DEFAULT_NEXT,
            now,
        ))
    }

    async fn full_run(&self, record: &RunRecord) -> Result<v1::Run, Status> {
        RunApi {
            ctx: self.ctx.clone(),
        }
        .run_with_tasks(record)
        .await
    }
}

fn time_field(
    field: &str,
    value: Option<&pbjson_types::Timestamp>,
) -> Result<DateTime<Utc>, Status> {
    let value = value.ok_or_else(|| {
        status(
            ErrorKind::InvalidArgument,
            format!("field `{field}`: required (an RFC 3339 time, e.g. 2026-11-01T00:00:00Z)"),
        )
    })?;
    ork_proto::time::from_proto(value).ok_or_else(|| {
        status(
            ErrorKind::InvalidArgument,
            format!("field `{field}`: not a valid time"),
        )
    })
}

#[tonic::async_trait]
impl ScheduleService for ScheduleApi {
    async fn list_schedules(
        &self,
        request: Request<v1::ListSchedulesRequest>,
    ) -> Result<Response<v1::ListSchedulesResponse>, Status> {
        let next = match request.into_inner().next {
            0 => DEFAULT_NEXT,
            n if n > MAX_NEXT => {
                return Err(status(
                    ErrorKind::InvalidArgument,
                    format!("field `next`: at most {MAX_NEXT}"),
                ));
            }
            n => n,
        };
        let states = self.ctx.state.schedule_states().await.map_err(from_state)?;
        let now = Utc::now();
        let schedules = self
            .ctx
            .state
            .scheduled_workflows()
            .await
            .map_err(from_state)?
            .iter()
            .map(|(w, last)| schedule(w, *last, states.get(&w.name), next, now))
            .collect();
        Ok(Response::new(v1::ListSchedulesResponse { schedules }))
    }

    async fn pause_schedule(
        &self,
        request: Request<v1::PauseScheduleRequest>,
    ) -> Result<Response<v1::PauseScheduleResponse>, Status> {
        let schedule = self
            .set_paused(&request.into_inner().workflow, true)
            .await?;
        Ok(Response::new(v1::PauseScheduleResponse {
            schedule: Some(schedule),
        }))
    }

    async fn resume_schedule(
        &self,
        request: Request<v1::ResumeScheduleRequest>,
    ) -> Result<Response<v1::ResumeScheduleResponse>, Status> {
        let schedule = self
            .set_paused(&request.into_inner().workflow, false)
            .await?;
        Ok(Response::new(v1::ResumeScheduleResponse {
            schedule: Some(schedule),
        }))
    }

    async fn trigger_schedule(
        &self,
        request: Request<v1::TriggerScheduleRequest>,
    ) -> Result<Response<v1::TriggerScheduleResponse>, Status> {
        let name = request.into_inner().workflow;
        self.scheduled(&name).await?;
        let now = Utc::now();
        // As the schedule would, but not recorded as a fire: a trigger must
        // not make the cron think the fires before it are done.
        let new = NewRun {
            workflow: name.clone(),
            input: serde_json::json!({
                "scheduled_for": now.to_rfc3339_opts(SecondsFormat::Secs, true)
            }),
            triggered_by: TriggerType::Schedule,
            owner: self.ctx.owner.clone(),
            labels: Default::default(),
        };
        let record = self
            .ctx
            .state
            .create_run(new, now)
            .await
            .map_err(from_state)?;
        tracing::info!(workflow = %name, run = %record.id, "schedule triggered");
        Ok(Response::new(v1::TriggerScheduleResponse {
            run: Some(self.full_run(&record).await?),
        }))
    }

    async fn backfill_schedule(
        &self,
        request: Request<v1::BackfillScheduleRequest>,
    ) -> Result<Response<v1::BackfillScheduleResponse>, Status> {
        let req = request.into_inner();
        let (workflow, _) = self.scheduled(&req.workflow).await?;
        let from = time_field("start_time", req.start_time.as_ref())?;
        let to = time_field("end_time", req.end_time.as_ref())?;
        let now = Utc::now();
        if to > now {
            // A future fire recorded now would read as done to the cron.
            return Err(status(
                ErrorKind::InvalidArgument,
                format!(
                    "field `end_time`: {} is in the future; a backfill covers past fires only (the schedule fires the rest)",
                    to.to_rfc3339_opts(SecondsFormat::Secs, true)
                ),
            ));
        }
        let fires = ork_domain::schedule::fires_between(&workflow.version.definition, from, to)
            .map_err(|e| status(ErrorKind::InvalidArgument, e))?;
        let limit = if req.limit == 0 {
            usize::MAX
        } else {
            req.limit as usize
        };
        let mut runs = Vec::new();
        let mut existing = 0u32;
        let mut visited = 0usize;
        for fire in &fires {
            if runs.len() >= limit {
                break;
            }
            visited += 1;
            match self
                .ctx
                .state
                .fire_schedule(&workflow.name, *fire, &self.ctx.owner, Utc::now())
                .await
                .map_err(from_state)?
            {
                Some(run) => runs.push(run),
                None => existing += 1,
            }
        }
        if !runs.is_empty() {
            tracing::info!(workflow = %workflow.name, created = runs.len(), existing, "schedule backfilled");
        }
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(Response::new(v1::BackfillScheduleResponse {
            fires: count(fires.len()),
            runs: runs
                .iter()
                .map(|r| crate::views::run(r, Vec::new()))
                .collect(),
            existing,
            remaining: count(fires.len() - visited),
        }))
    }
}
