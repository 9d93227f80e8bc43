//! The HTTP/JSON gateway: the REST routes, served on the gRPC port, each
//! calling the same service struct as its gRPC method.
//!
//! One table ([`ROUTES`]) drives both the router and the OpenAPI document.
//! A request's path parameters, query string (GET, DELETE) or JSON body (POST)
//! become one JSON object that is parsed, with pbjson's proto3 JSON mapping,
//! into the method's request message; the response message is returned in the
//! same mapping. Errors are JSON `{code, message, details}` with the HTTP
//! status of `error::ERROR_TABLE`; nothing a client sends yields a 5xx.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{MethodFilter, get, on};
use futures::StreamExt as _;
use ork_proto::v1::{
    self, event_service_server::EventService, pool_service_server::PoolService,
    run_service_server::RunService, schedule_service_server::ScheduleService,
    token_service_server::TokenService, workflow_service_server::WorkflowService,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use tonic::{Code, Status};

use super::error::{ErrorKind, http_status_of_code};
use super::{ApiContext, EventApi, PoolApi, RunApi, ScheduleApi, TokenApi, WorkflowApi};
use crate::auth::Principal;

/// Query parameter of the logs route that turns it into a Server-Sent Events
/// stream (`FollowTaskLogs`).
pub const FOLLOW_PARAM: &str = "follow";

/// The header a reconnecting Server-Sent Events client (a browser's
/// `EventSource`) sends with the `id` of the last event it received; a
/// follow resumes after it instead of replaying every line.
pub const LAST_EVENT_ID: &str = "last-event-id";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    Get,
    Post,
    Delete,
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Post => "post",
            Self::Delete => "delete",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Self::Get => MethodFilter::GET,
            Self::Post => MethodFilter::POST,
            Self::Delete => MethodFilter::DELETE,
        }
    }
}

/// The gRPC methods the gateway exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    DeployWorkflow,
    ListWorkflows,
    GetWorkflow,
    DeleteWorkflow,
    StartRun,
    ListRuns,
    GetRun,
    CancelRun,
    RetryRun,
    ListTaskRuns,
    GetTaskLogs,
    ListWorkers,
    CreateToken,
    ListTokens,
    RevokeToken,
    WatchRun,
    ListSchedules,
    PauseSchedule,
    ResumeSchedule,
    TriggerSchedule,
    BackfillSchedule,
    PublishEvent,
    ListWorkflowVersions,
    RollbackWorkflow,
}

impl Rpc {
    /// The service's full proto name.
    pub fn service(self) -> &'static str {
        match self {
            Self::DeployWorkflow
            | Self::ListWorkflows
            | Self::GetWorkflow
            | Self::DeleteWorkflow
            | Self::ListWorkflowVersions
            | Self::RollbackWorkflow => "ork.v1.WorkflowService",
            Self::ListWorkers => "ork.v1.PoolService",
            Self::CreateToken | Self::ListTokens | Self::RevokeToken => "ork.v1.TokenService",
            Self::ListSchedules
            | Self::PauseSchedule
            | Self::ResumeSchedule
            | Self::TriggerSchedule
            | Self::BackfillSchedule => "ork.v1.ScheduleService",
            Self::PublishEvent => "ork.v1.EventService",
            _ => "ork.v1.RunService",
        }
    }

    /// The method's proto name.
    pub fn method(self) -> &'static str {
        match self {
            Self::DeployWorkflow => "DeployWorkflow",
            Self::ListWorkflows => "ListWorkflows",
            Self::GetWorkflow => "GetWorkflow",
            Self::DeleteWorkflow => "DeleteWorkflow",
            Self::StartRun => "StartRun",
            Self::ListRuns => "ListRuns",
            Self::GetRun => "GetRun",
            Self::CancelRun => "CancelRun",
            Self::RetryRun => "RetryRun",
            Self::ListTaskRuns => "ListTaskRuns",
            Self::GetTaskLogs => "GetTaskLogs",
            Self::ListWorkers => "ListWorkers",
            Self::CreateToken => "CreateToken",
            Self::ListTokens => "ListTokens",
            Self::RevokeToken => "RevokeToken",
            Self::WatchRun => "WatchRun",
            Self::ListSchedules => "ListSchedules",
            Self::PauseSchedule => "PauseSchedule",
            Self::ResumeSchedule => "ResumeSchedule",
            Self::TriggerSchedule => "TriggerSchedule",
            Self::BackfillSchedule => "BackfillSchedule",
            Self::PublishEvent => "PublishEvent",
            Self::ListWorkflowVersions => "ListWorkflowVersions",
            Self::RollbackWorkflow => "RollbackWorkflow",
        }
    }
}

/// One REST route and the gRPC method it calls.
#[derive(Debug)]
pub struct RestRoute {
    pub method: HttpMethod,
    /// In axum's (and OpenAPI's) syntax: `/runs/{id}`.
    pub path: &'static str,
    pub rpc: Rpc,
    /// `(path parameter, request field)` pairs.
    pub path_fields: &'static [(&'static str, &'static str)],
    /// The other request fields come from a JSON body (else from the query).
    pub body: bool,
}

const fn route(
    method: HttpMethod,
    path: &'static str,
    rpc: Rpc,
    path_fields: &'static [(&'static str, &'static str)],
) -> RestRoute {
    RestRoute {
        method,
        path,
        rpc,
        path_fields,
        body: matches!(method, HttpMethod::Post),
    }
}

/// Every REST route.
pub const ROUTES: &[RestRoute] = &[
    route(HttpMethod::Get, "/workflows", Rpc::ListWorkflows, &[]),
    route(HttpMethod::Post, "/workflows", Rpc::DeployWorkflow, &[]),
    route(
        HttpMethod::Get,
        "/workflows/{name}",
        Rpc::GetWorkflow,
        &[("name", "name")],
    ),
    route(
        HttpMethod::Delete,
        "/workflows/{name}",
        Rpc::DeleteWorkflow,
        &[("name", "name")],
    ),
    route(
        HttpMethod::Post,
        "/workflows/{name}/runs",
        Rpc::StartRun,
        &[("name", "workflow")],
    ),
    route(HttpMethod::Get, "/runs", Rpc::ListRuns, &[]),
    route(HttpMethod::Get, "/runs/{id}", Rpc::GetRun, &[("id", "id")]),
    route(
        HttpMethod::Post,
        "/runs/{id}/cancel",
        Rpc::CancelRun,
        &[("id", "id")],
    ),
    route(
        HttpMethod::Post,
        "/runs/{id}/retry",
        Rpc::RetryRun,
        &[("id", "id")],
    ),
    route(
        HttpMethod::Get,
        "/runs/{id}/tasks",
        Rpc::ListTaskRuns,
        &[("id", "run_id")],
    ),
    route(
        HttpMethod::Get,
        "/runs/{id}/tasks/{name}/logs",
        Rpc::GetTaskLogs,
        &[("id", "run_id"), ("name", "task")],
    ),
    route(HttpMethod::Get, "/workers", Rpc::ListWorkers, &[]),
    route(HttpMethod::Get, "/tokens", Rpc::ListTokens, &[]),
    route(HttpMethod::Post, "/tokens", Rpc::CreateToken, &[]),
    route(
        HttpMethod::Delete,
        "/tokens/{name}",
        Rpc::RevokeToken,
        &[("name", "name")],
    ),
    route(
        HttpMethod::Get,
        "/runs/{id}/watch",
        Rpc::WatchRun,
        &[("id", "id")],
    ),
    route(HttpMethod::Get, "/schedules", Rpc::ListSchedules, &[]),
    route(
        HttpMethod::Post,
        "/schedules/{workflow}/pause",
        Rpc::PauseSchedule,
        &[("workflow", "workflow")],
    ),
    route(
        HttpMethod::Post,
        "/schedules/{workflow}/resume",
        Rpc::ResumeSchedule,
        &[("workflow", "workflow")],
    ),
    route(
        HttpMethod::Post,
        "/schedules/{workflow}/trigger",
        Rpc::TriggerSchedule,
        &[("workflow", "workflow")],
    ),
    route(
        HttpMethod::Post,
        "/schedules/{workflow}/backfill",
        Rpc::BackfillSchedule,
        &[("workflow", "workflow")],
    ),
    route(
        HttpMethod::Get,
        "/workflows/{name}/versions",
        Rpc::ListWorkflowVersions,
        &[("name", "name")],
    ),
    route(
        HttpMethod::Post,
        "/workflows/{name}/rollback",
        Rpc::RollbackWorkflow,
        &[("name", "name")],
    ),
    route(
        HttpMethod::Post,
        "/events/{name}",
        Rpc::PublishEvent,
        &[("name", "name")],
    ),
];

/// A REST error: the JSON body `{code, message, details}` and its status.
#[derive(Debug)]
pub struct ApiError {
    http: u16,
    code: Code,
    message: String,
    field: Option<String>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, field: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            http: kind.http_status(),
            code: kind.grpc_code(),
            message: message.into(),
            field: field.map(str::to_owned),
        }
    }

    fn invalid(field: Option<&str>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, field, message)
    }

    /// A service's status; the field comes from the services' message
    /// convention "field `NAME`: ...".
    pub fn from_status(status: &Status) -> Self {
        let message = status.message().to_owned();
        let field = message
            .strip_prefix("field `")
            .and_then(|rest| rest.split_once('`'))
            .map(|(field, _)| field.to_owned());
        Self {
            http: http_status_of_code(status.code()),
            code: status.code(),
            message,
            field,
        }
    }

    /// An axum extractor's rejection: too large is 413, anything else the
    /// client's fault.
    fn rejection(status: StatusCode, text: String, max_body_bytes: usize) -> Self {
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                ErrorKind::TooLarge,
                None,
                format!(
                    "the request body is larger than {max_body_bytes} bytes (the server's --max-body-bytes); keep large data in object storage and pass its location"
                ),
            )
        } else {
            Self::invalid(None, text)
        }
    }

    pub fn body(&self) -> Value {
        let details: Vec<Value> = self
            .field
            .iter()
            .map(|f| json!({ "field": f, "description": self.message }))
            .collect();
        json!({ "code": code_name(self.code), "message": self.message, "details": details })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.body())).into_response()
    }
}

/// `NotFound` → `NOT_FOUND`: the canonical name of a gRPC code.
pub fn code_name(code: Code) -> String {
    let debug = format!("{code:?}");
    let mut name = String::with_capacity(debug.len() + 4);
    for (i, c) in debug.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

#[derive(Clone)]
struct Gateway {
    workflows: Arc<WorkflowApi>,
    runs: Arc<RunApi>,
    pool: Arc<PoolApi>,
    tokens: Arc<TokenApi>,
    schedules: Arc<ScheduleApi>,
    events: Arc<EventApi>,
    max_body_bytes: usize,
}

/// The REST routes, `/healthz` and `/openapi.json`, with JSON fallbacks for
/// unknown paths and methods.
pub fn router(ctx: ApiContext) -> Router {
    let max_body_bytes = ctx.limits.max_body_bytes;
    let gateway = Gateway {
        workflows: Arc::new(WorkflowApi { ctx: ctx.clone() }),
        runs: Arc::new(RunApi { ctx: ctx.clone() }),
        pool: Arc::new(PoolApi { ctx: ctx.clone() }),
        tokens: Arc::new(TokenApi { ctx: ctx.clone() }),
        schedules: Arc::new(ScheduleApi { ctx: ctx.clone() }),
        events: Arc::new(EventApi { ctx }),
        max_body_bytes,
    };
    let mut router = Router::new();
    for route in ROUTES {
        let handler = move |State(gateway): State<Gateway>,
                            principal: Option<Extension<Principal>>,
                            path: Result<Path<Vec<(String, String)>>, PathRejection>,
                            query: Result<Query<Vec<(String, String)>>, QueryRejection>,
                            headers: HeaderMap,
                            body: Result<Bytes, BytesRejection>| async move {
            let principal = principal.map_or(Principal::Anonymous, |Extension(p)| p);
            gateway
                .handle(route, principal, path, query, &headers, body)
                .await
                .unwrap_or_else(IntoResponse::into_response)
        };
        router = router.route(route.path, on(route.method.filter(), handler));
    }
    router
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "SERVING" })) }),
        )
        .route("/openapi.json", get(openapi_document))
        .fallback(|| async {
            ApiError::new(
                ErrorKind::NotFound,
                None,
                "no such route; GET /openapi.json lists the API",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorKind::MethodNotAllowed,
                None,
                "this path does not serve that method; GET /openapi.json lists the API",
            )
        })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(gateway)
}

static OPENAPI: LazyLock<String> = LazyLock::new(super::openapi::document_text);

async fn openapi_document() -> Response {
    ([(CONTENT_TYPE, "application/json")], OPENAPI.as_str()).into_response()
}

/// Parses the merged request fields into a request message, naming the field
/// that was wrong.
/// Request fields a query string cannot give as plain text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueryField {
    /// A repeated scalar (a list filter): the name is repeated.
    List,
    /// `true` or `false`.
    Bool,
}

/// How the query string gives `field` of `rpc`'s request, when it is not
/// plain text (read from the proto descriptors, so new fields just work).
fn query_field_kind(rpc: Rpc, field: &str) -> Option<QueryField> {
    use prost::Message as _;
    use prost_types::field_descriptor_proto::{Label, Type};
    static KINDS: LazyLock<HashMap<(String, String, String), QueryField>> = LazyLock::new(|| {
        let set = prost_types::FileDescriptorSet::decode(ork_proto::FILE_DESCRIPTOR_SET)
            .unwrap_or_default();
        let messages: HashMap<String, &prost_types::DescriptorProto> = set
            .file
            .iter()
            .flat_map(|f| {
                f.message_type
                    .iter()
                    .map(move |m| (format!(".{}.{}", f.package(), m.name()), m))
            })
            .collect();
        let mut out = HashMap::new();
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    let Some(input) = messages.get(method.input_type()) else {
                        continue;
                    };
                    for f in &input.field {
                        let kind = match (f.label(), f.r#type()) {
                            (_, Type::Message) => continue,
                            (Label::Repeated, _) => QueryField::List,
                            (_, Type::Bool) => QueryField::Bool,
                            _ => continue,
                        };
                        out.insert(
                            (
                                format!("{}.{}", file.package(), service.name()),
                                method.name().to_owned(),
                                f.name().to_owned(),
                            ),
                            kind,
                        );
                    }
                }
            }
        }
        out
    });
    KINDS
        .get(&(
            rpc.service().to_owned(),
            rpc.method().to_owned(),
            field.to_owned(),
        ))
        .copied()
}

fn decode<T: DeserializeOwned>(fields: Map<String, Value>) -> Result<T, ApiError> {
    ork_proto::decode::message(Value::Object(fields)).map_err(|e| match &e.field {
        Some(f) => ApiError::invalid(Some(f), e.to_string()),
        None => ApiError::invalid(None, e.message),
    })
}

async fn call<Req, Resp, Fut>(
    fields: Map<String, Value>,
    principal: &Principal,
    method: impl FnOnce(tonic::Request<Req>) -> Fut,
) -> Result<Response, ApiError>
where
    Req: DeserializeOwned,
    Resp: Serialize,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let mut request = tonic::Request::new(decode::<Req>(fields)?);
    // The caller, as the auth layer established it, for the service.
    request.extensions_mut().insert(principal.clone());
    let response = method(request)
        .await
        .map_err(|s| ApiError::from_status(&s))?;
    Ok(Json(response.into_inner()).into_response())
}

fn parse_follow(value: &str) -> Result<bool, ApiError> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" | "" => Ok(false),
        other => Err(ApiError::invalid(
            Some(FOLLOW_PARAM),
            format!("field `{FOLLOW_PARAM}`: expected true or false, got `{other}`"),
        )),
    }
}

impl Gateway {
    async fn handle(
        &self,
        route: &'static RestRoute,
        principal: Principal,
        path: Result<Path<Vec<(String, String)>>, PathRejection>,
        query: Result<Query<Vec<(String, String)>>, QueryRejection>,
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Result<Response, ApiError> {
        let limit = self.max_body_bytes;
        let Path(params) =
            path.map_err(|r| ApiError::rejection(r.status(), r.body_text(), limit))?;
        let Query(query) =
            query.map_err(|r| ApiError::rejection(r.status(), r.body_text(), limit))?;
        let body = body.map_err(|r| ApiError::rejection(r.status(), r.body_text(), limit))?;

        let mut fields = Map::new();
        let mut follow = false;
        if route.body {
            if !body.iter().all(u8::is_ascii_whitespace) {
                match serde_json::from_slice::<Value>(&body) {
                    Ok(Value::Object(map)) => fields = map,
                    Ok(other) => {
                        return Err(ApiError::invalid(
                            None,
                            format!(
                                "the request body must be a JSON object, got {}",
                                json_type(&other)
                            ),
                        ));
                    }
                    Err(e) => {
                        return Err(ApiError::invalid(
                            None,
                            format!("the request body is not valid JSON: {e}"),
                        ));
                    }
                }
            }
            if let Some((name, _)) = query.first() {
                return Err(ApiError::invalid(
                    Some(name),
                    format!(
                        "field `{name}`: {} takes its fields in the JSON body, not the query",
                        route.path
                    ),
                ));
            }
        } else {
            for (name, value) in query {
                if route.rpc == Rpc::GetTaskLogs && name == FOLLOW_PARAM {
                    follow = parse_follow(&value)?;
                    continue;
                }
                let kind = query_field_kind(route.rpc, &name);
                if kind == Some(QueryField::List) {
                    // `?status=failed&status=cancelled`: each one an item.
                    if let Value::Array(items) = fields
                        .entry(name)
                        .or_insert_with(|| Value::Array(Vec::new()))
                    {
                        items.push(Value::String(value));
                    }
                    continue;
                }
                // Proto JSON wants a JSON boolean; a query string has text.
                let value = match (kind, value.as_str()) {
                    (Some(QueryField::Bool), "true") => Value::Bool(true),
                    (Some(QueryField::Bool), "false") => Value::Bool(false),
                    _ => Value::String(value),
                };
                if fields.contains_key(&name) {
                    return Err(ApiError::invalid(
                        Some(&name),
                        format!("field `{name}`: given more than once"),
                    ));
                }
                fields.insert(name, value);
            }
        }
        for (param, field) in route.path_fields {
            if fields.contains_key(*field) {
                return Err(ApiError::invalid(
                    Some(field),
                    format!(
                        "field `{field}`: it comes from the URL path, leave it out of the request"
                    ),
                ));
            }
            let value = params
                .iter()
                .find(|(p, _)| p == param)
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            fields.insert((*field).to_owned(), Value::String(value));
        }

        let (workflows, runs, pool, tokens, schedules, events) = (
            &*self.workflows,
            &*self.runs,
            &*self.pool,
            &*self.tokens,
            &*self.schedules,
            &*self.events,
        );
        let p = &principal;
        match route.rpc {
            Rpc::DeployWorkflow => call(fields, p, |r| workflows.deploy_workflow(r)).await,
            Rpc::ListWorkflows => call(fields, p, |r| workflows.list_workflows(r)).await,
            Rpc::GetWorkflow => call(fields, p, |r| workflows.get_workflow(r)).await,
            Rpc::DeleteWorkflow => call(fields, p, |r| workflows.delete_workflow(r)).await,
            Rpc::StartRun => call(fields, p, |r| runs.start_run(r)).await,
            Rpc::ListRuns => call(fields, p, |r| runs.list_runs(r)).await,
            Rpc::GetRun => call(fields, p, |r| runs.get_run(r)).await,
            Rpc::CancelRun => call(fields, p, |r| runs.cancel_run(r)).await,
            Rpc::RetryRun => call(fields, p, |r| runs.retry_run(r)).await,
            Rpc::ListTaskRuns => call(fields, p, |r| runs.list_task_runs(r)).await,
            Rpc::GetTaskLogs if follow => self.follow_logs(fields, headers).await,
            Rpc::GetTaskLogs => call(fields, p, |r| runs.get_task_logs(r)).await,
            Rpc::ListWorkers => call(fields, p, |r| pool.list_workers(r)).await,
            Rpc::CreateToken => call(fields, p, |r| tokens.create_token(r)).await,
            Rpc::ListTokens => call(fields, p, |r| tokens.list_tokens(r)).await,
            Rpc::RevokeToken => call(fields, p, |r| tokens.revoke_token(r)).await,
            Rpc::WatchRun => self.watch_run(fields, p).await,
            Rpc::ListSchedules => call(fields, p, |r| schedules.list_schedules(r)).await,
            Rpc::PauseSchedule => call(fields, p, |r| schedules.pause_schedule(r)).await,
            Rpc::ResumeSchedule => call(fields, p, |r| schedules.resume_schedule(r)).await,
            Rpc::TriggerSchedule => call(fields, p, |r| schedules.trigger_schedule(r)).await,
            Rpc::BackfillSchedule => call(fields, p, |r| schedules.backfill_schedule(r)).await,
            Rpc::PublishEvent => call(fields, p, |r| events.publish_event(r)).await,
            Rpc::ListWorkflowVersions => {
                call(fields, p, |r| workflows.list_workflow_versions(r)).await
            }
            Rpc::RollbackWorkflow => call(fields, p, |r| workflows.rollback_workflow(r)).await,
        }
    }

    /// `?follow=true`: `FollowTaskLogs` as Server-Sent Events: a `lines`
    /// event per message (a `FollowTaskLogsResponse`), then `end` when every
    /// selected task has finished, or `error` with a JSON error. Every event
    /// carries the cursor after its lines as its `id`, so a client that
    /// reconnects with `Last-Event-ID` resumes where it was.
    async fn follow_logs(
        &self,
        fields: Map<String, Value>,
        headers: &HeaderMap,
    ) -> Result<Response, ApiError> {
        // Parsed as the non-following request, so both modes accept the same
        // parameters; `limit` has no meaning for a stream.
        let mut req: v1::GetTaskLogsRequest = decode(fields)?;
        if let Some(last) = headers.get(LAST_EVENT_ID) {
            // A reconnect: the header is newer than any cursor in the URL.
            req.cursor = last_event_cursor(last)?;
        }
        let start = if req.cursor.is_empty() {
            "0".to_owned()
        } else {
            req.cursor.clone()
        };
        let stream = self
            .runs
            .follow_task_logs(tonic::Request::new(v1::FollowTaskLogsRequest {
                run_id: req.run_id,
                task: req.task,
                cursor: req.cursor,
            }))
            .await
            .map_err(|s| ApiError::from_status(&s))?
            .into_inner();
        // The cursor reached so far: the id of every event.
        let last = Arc::new(std::sync::Mutex::new(start));
        let seen = last.clone();
        let events = stream
            .map(move |item| {
                let mut cursor = seen.lock().unwrap_or_else(|e| e.into_inner());
                match item {
                    Ok(message) => {
                        if !message.next_cursor.is_empty() {
                            cursor.clone_from(&message.next_cursor);
                        }
                        Event::default()
                            .event("lines")
                            .id(cursor.as_str())
                            .json_data(message)
                    }
                    Err(status) => Event::default()
                        .event("error")
                        .id(cursor.as_str())
                        .json_data(ApiError::from_status(&status).body()),
                }
            })
            .chain(futures::stream::once(async move {
                let cursor = last.lock().unwrap_or_else(|e| e.into_inner()).clone();
                Ok(Event::default().event("end").id(cursor).data("{}"))
            }));
        Ok(Sse::new(events)
            .keep_alive(KeepAlive::default())
            .into_response())
    }
}

/// The cursor a `Last-Event-ID` header names: the `id` of an event this
/// route sent, which is a log cursor (digits).
fn last_event_cursor(value: &HeaderValue) -> Result<String, ApiError> {
    match value.to_str() {
        Ok(text)
            if !text.is_empty() && text.len() <= 20 && text.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Ok(text.to_owned())
        }
        Ok("") => Ok(String::new()),
        _ => Err(ApiError::invalid(
            Some("Last-Event-ID"),
            "header `Last-Event-ID`: send back the `id` of the last event received (a number), or leave it out to start at the first line",
        )),
    }
}

impl Gateway {
    /// `WatchRun` as Server-Sent Events: a `run` event per message (a
    /// `WatchRunResponse`; the first is the whole current run), then `end`
    /// after the message that shows the run ended, or `error` with a JSON
    /// error. What browsers (the web UI) use to stay live without polling.
    async fn watch_run(
        &self,
        fields: Map<String, Value>,
        principal: &Principal,
    ) -> Result<Response, ApiError> {
        let mut request = tonic::Request::new(decode::<v1::WatchRunRequest>(fields)?);
        request.extensions_mut().insert(principal.clone());
        let stream = self
            .runs
            .watch_run(request)
            .await
            .map_err(|s| ApiError::from_status(&s))?
            .into_inner();
        let events = stream
            .map(|item| match item {
                Ok(message) => Event::default().event("run").json_data(message),
                Err(status) => Event::default()
                    .event("error")
                    .json_data(ApiError::from_status(&status).body()),
            })
            .chain(futures::stream::once(async {
                Ok(Event::default().event("end").data("{}"))
            }));
        Ok(Sse::new(events)
            .keep_alive(KeepAlive::default())
            .into_response())
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_are_canonical() {
        assert_eq!(code_name(Code::NotFound), "NOT_FOUND");
        assert_eq!(code_name(Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_name(Code::Ok), "OK");
    }

    #[test]
    fn status_field_is_taken_from_the_message() {
        let e = ApiError::from_status(&Status::invalid_argument(
            "field `input`: must be an object",
        ));
        assert_eq!(e.http, 400);
        assert_eq!(e.body()["details"][0]["field"], "input");
    }

    #[test]
    fn decode_names_the_wrong_field() {
        let mut fields = Map::new();
        fields.insert("limit".into(), json!("many"));
        let e = decode::<v1::ListRunsRequest>(fields).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("limit"), "{e:?}");
        let mut fields = Map::new();
        fields.insert("nope".into(), json!(1));
        let e = decode::<v1::ListRunsRequest>(fields).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("nope"), "{e:?}");
    }
}
