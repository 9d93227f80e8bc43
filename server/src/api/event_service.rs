//! `ork.v1.EventService`: publish an event, starting one run of every
//! subscribed workflow (`on: {event: NAME}`), exactly once per event id.
//!
//! Which workflows subscribe is read from the deployed definitions
//! (`ork_domain::events`); that an id starts its runs once is the store's
//! unique key (`state::events`). Signed webhooks (`hooks.rs`) go through the
//! same [`publish`], for their one workflow.

use std::collections::BTreeMap;

use chrono::Utc;
use ork_domain::TriggerType;
use ork_proto::json::from_proto_opt;
use ork_proto::v1::{self, event_service_server::EventService};
use serde_json::Value;
use tonic::{Request, Response, Status};

use super::ApiContext;
use super::error::{ErrorKind, from_state, status};
use crate::state::{NewRun, Published};

/// Label of a run an event started: the event's name.
pub const EVENT_LABEL: &str = "ork/event";
/// Label of a run an event started: the event's id.
pub const EVENT_ID_LABEL: &str = "ork/event-id";

pub struct EventApi {
    pub(crate) ctx: ApiContext,
}

/// Which workflows an event starts.
pub(super) enum Audience<'a> {
    /// Every workflow whose `on:` subscribes to it.
    Subscribers,
    /// One workflow, whatever its `on: event` (a webhook names it).
    Workflow(&'a str),
}

/// Starts the event's runs once per id; checks the id, the name and the
/// data's size. `id` is `None` for a generated one.
pub(super) async fn publish(
    ctx: &ApiContext,
    name: &str,
    id: Option<String>,
    data: Value,
    audience: Audience<'_>,
) -> Result<(String, Published), Status> {
    ork_domain::events::check_name(name)
        .map_err(|e| status(ErrorKind::InvalidArgument, format!("field `name`: {e}")))?;
    let id = match id {
        Some(id) => {
            ork_domain::events::check_id(&id)
                .map_err(|e| status(ErrorKind::InvalidArgument, format!("field `id`: {e}")))?;
            id
        }
        None => uuid::Uuid::now_v7().to_string(),
    };
    let input = ork_domain::events::run_input(&id, name, &data);
    if let Some(refusal) = super::limits::input_refusal(&input, ctx.limits.max_input_bytes) {
        return Err(status(ErrorKind::InvalidArgument, refusal));
    }
    // A webhook's delivery ids are its workflow's own: the key cannot
    // collide with an event id (those have no spaces).
    let key = match audience {
        Audience::Subscribers => id.clone(),
        Audience::Workflow(workflow) => format!("hook {workflow} {id}"),
    };
    let (workflows, trigger) = match audience {
        Audience::Subscribers => {
            let all = ctx.state.list_workflows().await.map_err(from_state)?;
            let names: Vec<String> = all
                .into_iter()
                .filter(|w| ork_domain::events::subscribes(&w.version.definition.on, name, &data))
                .map(|w| w.name)
                .collect();
            (names, TriggerType::Event)
        }
        Audience::Workflow(workflow) => (vec![workflow.to_owned()], TriggerType::Webhook),
    };
    let labels = BTreeMap::from([
        (EVENT_LABEL.to_owned(), name.to_owned()),
        (EVENT_ID_LABEL.to_owned(), id.clone()),
    ]);
    let runs = workflows
        .into_iter()
        .map(|workflow| NewRun {
            workflow,
            input: input.clone(),
            triggered_by: trigger,
            owner: ctx.owner.clone(),
            labels: labels.clone(),
        })
        .collect();
    let published = ctx
        .state
        .publish_event(&key, name, runs, Utc::now())
        .await
        .map_err(from_state)?;
    tracing::info!(event = %name, %id, runs = published.runs.len(), first = published.first, "event published");
    Ok((id, published))
}

#[tonic::async_trait]
impl EventService for EventApi {
    async fn publish_event(
        &self,
        request: Request<v1::PublishEventRequest>,
    ) -> Result<Response<v1::PublishEventResponse>, Status> {
        let req = request.into_inner();
        let data = match from_proto_opt(req.data.as_ref()) {
            Value::Null => Value::Object(Default::default()),
            v @ Value::Object(_) => v,
            other => {
                return Err(status(
                    ErrorKind::InvalidArgument,
                    format!(
                        "field `data`: an event's data must be a JSON object, got {}",
                        other.to_string().chars().take(80).collect::<String>()
                    ),
                ));
            }
        };
        let id = (!req.id.is_empty()).then_some(req.id);
        let (id, published) =
            publish(&self.ctx, &req.name, id, data, Audience::Subscribers).await?;
        Ok(Response::new(v1::PublishEventResponse {
            id,
            runs: published
                .runs
                .iter()
                .map(|r| crate::views::run(r, Vec::new()))
                .collect(),
            duplicate: !published.first,
        }))
    }
}
