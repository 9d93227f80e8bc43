//! The one table of who may call what: every gRPC method by its full path,
//! and the REST routes through the gRPC method each one calls.
//!
//! A test enumerates every method of every service the server registers from
//! the descriptor sets and fails when one is missing here, so a new RPC
//! cannot ship without deciding its role.

use axum::http::Method;

use crate::api::gateway::{HttpMethod, ROUTES, RestRoute};
use crate::state::tokens::Role;

/// What a method asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, no credential: health checks and the API description.
    Public,
    /// A viewer, operator or admin token.
    Viewer,
    /// An operator or admin token.
    Operator,
    /// An admin token.
    Admin,
    /// A worker token, or for the calls of one attempt, that attempt's own
    /// credential.
    Worker,
}

impl Access {
    /// Whether a token of `role` may make a call that asks for `self`.
    pub fn allows(self, role: Role) -> bool {
        match self {
            Access::Public => true,
            Access::Viewer => matches!(role, Role::Viewer | Role::Operator | Role::Admin),
            Access::Operator => matches!(role, Role::Operator | Role::Admin),
            Access::Admin => role == Role::Admin,
            Access::Worker => role == Role::Worker,
        }
    }

    /// The roles that may, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Access::Public => "no token",
            Access::Viewer => "a viewer, operator or admin token",
            Access::Operator => "an operator or admin token",
            Access::Admin => "an admin token",
            Access::Worker => "a worker token (or the attempt's own credential)",
        }
    }
}

/// Every method the server serves, by full gRPC path.
pub const METHOD_ACCESS: &[(&str, Access)] = &[
    ("/ork.v1.WorkflowService/DeployWorkflow", Access::Admin),
    ("/ork.v1.WorkflowService/GetWorkflow", Access::Viewer),
    ("/ork.v1.WorkflowService/ListWorkflows", Access::Viewer),
    ("/ork.v1.WorkflowService/DeleteWorkflow", Access::Admin),
    (
        "/ork.v1.WorkflowService/ListWorkflowVersions",
        Access::Viewer,
    ),
    ("/ork.v1.WorkflowService/RollbackWorkflow", Access::Admin),
    ("/ork.v1.RunService/StartRun", Access::Operator),
    ("/ork.v1.RunService/GetRun", Access::Viewer),
    ("/ork.v1.RunService/ListRuns", Access::Viewer),
    ("/ork.v1.RunService/CancelRun", Access::Operator),
    ("/ork.v1.RunService/RetryRun", Access::Operator),
    ("/ork.v1.RunService/ListTaskRuns", Access::Viewer),
    ("/ork.v1.RunService/GetTaskLogs", Access::Viewer),
    ("/ork.v1.RunService/FollowTaskLogs", Access::Viewer),
    ("/ork.v1.RunService/WatchRun", Access::Viewer),
    ("/ork.v1.PoolService/ListWorkers", Access::Viewer),
    ("/ork.v1.EventService/PublishEvent", Access::Operator),
    ("/ork.v1.ScheduleService/ListSchedules", Access::Viewer),
    ("/ork.v1.ScheduleService/PauseSchedule", Access::Operator),
    ("/ork.v1.ScheduleService/ResumeSchedule", Access::Operator),
    ("/ork.v1.ScheduleService/TriggerSchedule", Access::Operator),
    ("/ork.v1.ScheduleService/BackfillSchedule", Access::Operator),
    ("/ork.v1.WorkerService/GetTaskSpec", Access::Worker),
    ("/ork.v1.WorkerService/StartTask", Access::Worker),
    ("/ork.v1.WorkerService/Heartbeat", Access::Worker),
    ("/ork.v1.WorkerService/AppendLogs", Access::Worker),
    ("/ork.v1.WorkerService/CompleteTask", Access::Worker),
    ("/ork.v1.WorkerService/FailTask", Access::Worker),
    ("/ork.v1.WorkerService/Session", Access::Worker),
    ("/ork.v1.TokenService/CreateToken", Access::Admin),
    ("/ork.v1.TokenService/ListTokens", Access::Admin),
    ("/ork.v1.TokenService/RevokeToken", Access::Admin),
    // Load balancers and orchestrators probe health without credentials.
    ("/grpc.health.v1.Health/Check", Access::Public),
    ("/grpc.health.v1.Health/Watch", Access::Public),
    // Reflection describes the API only, but it is an API call like any
    // other; grpcurl sends a token with `-H 'authorization: Bearer ...'`.
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        Access::Viewer,
    ),
    (
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        Access::Viewer,
    ),
];

/// REST paths that call no gRPC method. `/openapi.json` is public: it is the
/// same document as the published proto, and tools read it to learn how to
/// authenticate before they have a token.
pub const PUBLIC_REST_PATHS: &[&str] = &["/healthz", "/openapi.json"];

/// What asks a path that is no method at all (an unknown gRPC method or REST
/// route): a valid token of any reading role, so that only callers who may
/// read learn what is not there.
pub const UNKNOWN: Access = Access::Viewer;

/// The access a full gRPC method path asks for.
pub fn method_access(path: &str) -> Option<Access> {
    METHOD_ACCESS
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, access)| *access)
}

/// The full gRPC path of the method a REST route calls.
pub fn route_method_path(route: &RestRoute) -> String {
    format!("/{}/{}", route.rpc.service(), route.rpc.method())
}

/// The REST route a request's method and path match, if any.
pub fn match_route(method: &Method, path: &str) -> Option<&'static RestRoute> {
    let want = match *method {
        Method::GET | Method::HEAD => HttpMethod::Get,
        Method::POST => HttpMethod::Post,
        Method::DELETE => HttpMethod::Delete,
        _ => return None,
    };
    ROUTES
        .iter()
        .find(|route| route.method == want && path_matches(route.path, path))
}

/// `/runs/{id}/tasks` matches `/runs/abc/tasks`: literal segments equal,
/// `{param}` segments non-empty.
fn path_matches(pattern: &str, path: &str) -> bool {
    let mut want = pattern.split('/');
    let mut have = path.split('/');
    loop {
        match (want.next(), have.next()) {
            (None, None) => return true,
            (Some(w), Some(h)) if w.starts_with('{') => {
                if h.is_empty() {
                    return false;
                }
            }
            (Some(w), Some(h)) if w == h => {}
            _ => return false,
        }
    }
}

/// Every method of every service in `sets` by full path, with whether it
/// streams from the client, and its input type: what the tests enumerate.
pub fn described_methods(sets: &[&[u8]]) -> Vec<DescribedMethod> {
    use prost::Message as _;
    let mut out = Vec::new();
    for bytes in sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(*bytes) else {
            continue;
        };
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    out.push(DescribedMethod {
                        path: format!("/{}.{}/{}", file.package(), service.name(), method.name()),
                        client_streaming: method.client_streaming(),
                        server_streaming: method.server_streaming(),
                        input_type: method.input_type().to_owned(),
                    });
                }
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out.dedup_by(|a, b| a.path == b.path);
    out
}

/// One method as its descriptor describes it.
#[derive(Debug, Clone)]
pub struct DescribedMethod {
    pub path: String,
    pub client_streaming: bool,
    pub server_streaming: bool,
    /// E.g. `.ork.v1.StartTaskRequest`.
    pub input_type: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::DESCRIPTOR_SETS;

    #[test]
    fn every_served_method_has_exactly_one_entry() {
        let methods = described_methods(DESCRIPTOR_SETS);
        assert!(methods.len() > 20, "{methods:?}");
        for method in &methods {
            let entries = METHOD_ACCESS
                .iter()
                .filter(|(p, _)| *p == method.path)
                .count();
            assert_eq!(
                entries, 1,
                "{} needs exactly one entry in METHOD_ACCESS (auth/roles.rs): decide who may call it",
                method.path
            );
        }
        for (path, _) in METHOD_ACCESS {
            assert!(
                methods.iter().any(|m| m.path == *path),
                "METHOD_ACCESS names {path}, which no service serves"
            );
        }
        for route in ROUTES {
            assert!(
                method_access(&route_method_path(route)).is_some(),
                "{route:?} calls a method without a role"
            );
        }
    }

    #[test]
    fn every_worker_call_names_its_attempt_in_field_1() {
        use prost::Message as _;
        let set = prost_types::FileDescriptorSet::decode(ork_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptors");
        let message = |name: &str| {
            set.file
                .iter()
                .flat_map(|f| f.message_type.iter().map(move |m| (f.package(), m)))
                .find(|(package, m)| format!(".{package}.{}", m.name()) == name)
                .map(|(_, m)| m.clone())
                .unwrap_or_else(|| panic!("no message {name}"))
        };
        let methods = described_methods(&[ork_proto::FILE_DESCRIPTOR_SET]);
        let worker: Vec<_> = methods
            .iter()
            .filter(|m| crate::auth::is_attempt_call(&m.path))
            .collect();
        assert_eq!(worker.len(), 6, "{worker:?}");
        for method in worker {
            assert!(
                !method.client_streaming && !method.server_streaming,
                "{method:?}"
            );
            let input = message(&method.input_type);
            let field = input
                .field
                .iter()
                .find(|f| f.number() == 1)
                .unwrap_or_else(|| panic!("{} has no field 1", method.input_type));
            assert_eq!(
                (field.name(), field.type_name()),
                ("attempt", ".ork.v1.AttemptRef"),
                "{}: the auth layer reads the attempt from field 1",
                method.path
            );
        }
    }

    #[test]
    fn rest_paths_match_their_routes() {
        let route = match_route(&Method::GET, "/runs/abc/tasks/t/logs").expect("logs route");
        assert_eq!(route_method_path(route), "/ork.v1.RunService/GetTaskLogs");
        let route = match_route(&Method::POST, "/workflows/etl/runs").expect("start route");
        assert_eq!(route_method_path(route), "/ork.v1.RunService/StartRun");
        assert!(match_route(&Method::GET, "/runs//tasks").is_none());
        assert!(match_route(&Method::PUT, "/runs").is_none());
        assert!(match_route(&Method::GET, "/nope").is_none());
    }

    #[test]
    fn roles_form_a_ladder_and_workers_stand_apart() {
        assert!(Access::Viewer.allows(Role::Admin));
        assert!(!Access::Operator.allows(Role::Viewer));
        assert!(!Access::Viewer.allows(Role::Worker));
        assert!(!Access::Worker.allows(Role::Admin));
        assert!(Access::Worker.allows(Role::Worker));
    }
}
