//! Authentication and authorization: one layer in front of gRPC and REST on
//! the one port, so no handler checks credentials itself.
//!
//! For every request the layer finds the gRPC method it calls (a REST route
//! maps to the method it calls), looks up what that method asks for in the
//! one table of `roles.rs`, and checks the bearer credential against it:
//! - an API token (`ork_...`, made by `ork token create`) with a role;
//! - for the calls of one attempt, a launched worker's attempt credential;
//! - for pool workers, a worker token that may touch only the attempts pushed
//!   to its own sessions (`attempts.rs`).
//!
//! The caller's identity ([`Principal`]) goes on to the handlers in the
//! request's extensions. Health and the OpenAPI document need nothing.

mod attempts;
pub mod bootstrap;
pub mod credentials;
mod rate;
pub mod roles;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use chrono::Utc;

use crate::api::error::ErrorKind;
use crate::api::gateway::ApiError;
use crate::executor::WorkerPool;
use crate::options::{AuthMode, ClientLimits};
use crate::state::tokens::{Role, TokenRecord, TokenStore};

pub use attempts::{WORKER_SERVICE, is_attempt_call};
pub use credentials::Verifier;
pub use rate::RateLimiter;
use roles::Access;

/// The method whose calls are rate-limited per token.
pub const START_RUN: &str = "/ork.v1.RunService/StartRun";

/// Who is calling, as the layer established it.
#[derive(Debug, Clone)]
pub enum Principal {
    /// Authentication is off: anyone who reaches the port.
    Anonymous,
    /// An API token.
    Token(Arc<TokenRecord>),
    /// A launched worker, by its attempt's credential.
    Attempt,
}

impl Principal {
    /// The caller of a request, from its extensions.
    pub fn of(extensions: &axum::http::Extensions) -> Principal {
        extensions
            .get::<Principal>()
            .cloned()
            .unwrap_or(Principal::Anonymous)
    }

    /// The caller of a gRPC request (tonic keeps the HTTP extensions).
    pub fn of_grpc<T>(request: &tonic::Request<T>) -> Principal {
        request
            .extensions()
            .get::<Principal>()
            .cloned()
            .unwrap_or(Principal::Anonymous)
    }

    pub fn token(&self) -> Option<&TokenRecord> {
        match self {
            Principal::Token(record) => Some(record),
            _ => None,
        }
    }
}

/// A refused request: the error kind (gRPC code and HTTP status) and why.
#[derive(Debug)]
pub struct Denied {
    pub kind: ErrorKind,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl Denied {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The refusal in the caller's protocol: a gRPC status, or a REST JSON
    /// error with its status.
    pub(crate) fn into_response(self, grpc: bool) -> Response {
        let mut response = if grpc {
            let status = tonic::Status::new(self.kind.grpc_code(), self.message);
            status
                .into_http::<axum::body::Body>()
                .map(axum::body::Body::new)
        } else {
            ApiError::new(self.kind, None, self.message).into_response()
        };
        if !grpc && self.kind == ErrorKind::Unauthenticated {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(wait) = self.retry_after {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            if let Ok(value) = HeaderValue::from_str(&secs.max(1).to_string()) {
                response.headers_mut().insert(RETRY_AFTER, value);
            }
        }
        response
    }
}

/// The checks of every request, shared by all connections.
pub struct Auth {
    mode: AuthMode,
    verifier: Verifier,
    pool: Arc<WorkerPool>,
    start_runs: RateLimiter,
    max_message_bytes: usize,
}

impl Auth {
    pub fn new(
        mode: AuthMode,
        tokens: Arc<dyn TokenStore>,
        pool: Arc<WorkerPool>,
        limits: &ClientLimits,
    ) -> Self {
        Self {
            mode,
            verifier: Verifier::new(tokens),
            pool,
            start_runs: RateLimiter::new(limits.start_run_rate, limits.start_run_burst),
            max_message_bytes: limits.max_message_bytes,
        }
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// The token store (for the token service).
    pub fn tokens(&self) -> &Arc<dyn TokenStore> {
        self.verifier.store()
    }

    /// Forgets what is cached of token `id`, so its revocation holds at once.
    pub fn forget(&self, id: &str) {
        self.verifier.forget(id);
    }

    /// Checks one request; returns it with its [`Principal`] attached.
    pub(crate) async fn authorize(
        &self,
        mut request: Request,
        grpc: bool,
    ) -> Result<Request, Denied> {
        let (method_path, access) = resolve(&request, grpc);
        if access == Access::Public {
            return Ok(request);
        }
        if self.mode != AuthMode::Tokens {
            request.extensions_mut().insert(Principal::Anonymous);
            return Ok(request);
        }
        let bearer = bearer(request.headers())?.to_owned();
        let what = method_path.as_deref().unwrap_or("this path");
        let attempt_call = grpc && method_path.as_deref().is_some_and(is_attempt_call);
        if credentials::is_api_token(&bearer) {
            let record = self
                .verifier
                .verify(&bearer, Utc::now())
                .await
                .map_err(rejected)?;
            if !access.allows(record.role) {
                return Err(Denied::new(
                    ErrorKind::PermissionDenied,
                    format!(
                        "token `{}` has role {}; {what} needs {}",
                        record.name,
                        record.role,
                        access.describe()
                    ),
                ));
            }
            if method_path.as_deref() == Some(START_RUN)
                && let Err(wait) = self.start_runs.admit(&record.id, Instant::now())
            {
                let mut denied = Denied::new(
                    ErrorKind::RateLimited,
                    format!(
                        "token `{}` starts runs faster than this server allows ({} per second, bursts of {}); retry in {} ms, or raise --start-run-rate",
                        record.name,
                        self.start_runs.per_second(),
                        self.start_runs.burst(),
                        wait.as_millis().max(1)
                    ),
                );
                denied.retry_after = Some(wait);
                return Err(denied);
            }
            if record.role == Role::Worker && attempt_call {
                let (read, attempt) =
                    attempts::read_attempt(request, self.max_message_bytes).await?;
                attempts::check_pool_attempt(&self.pool, &record, attempt.as_ref())?;
                request = read;
            }
            request.extensions_mut().insert(Principal::Token(record));
            Ok(request)
        } else if attempt_call {
            let (mut request, attempt) =
                attempts::read_attempt(request, self.max_message_bytes).await?;
            attempts::check_attempt_credential(&bearer, attempt.as_ref())?;
            request.extensions_mut().insert(Principal::Attempt);
            Ok(request)
        } else {
            Err(Denied::new(
                ErrorKind::Unauthenticated,
                "the bearer credential is not an API token (those start with `ork_`); an admin makes one with `ork token create`",
            ))
        }
    }
}

/// The full gRPC method a request calls (none for unknown REST paths) and
/// what it asks of the caller.
fn resolve(request: &Request, grpc: bool) -> (Option<String>, Access) {
    let path = request.uri().path();
    if grpc {
        let access = roles::method_access(path).unwrap_or(roles::UNKNOWN);
        return (Some(path.to_owned()), access);
    }
    if roles::PUBLIC_REST_PATHS.contains(&path) {
        return (None, Access::Public);
    }
    match roles::match_route(request.method(), path) {
        Some(route) => {
            let method = roles::route_method_path(route);
            let access = roles::method_access(&method).unwrap_or(roles::UNKNOWN);
            (Some(method), access)
        }
        None => (None, roles::UNKNOWN),
    }
}

/// The bearer credential of a request.
fn bearer(headers: &HeaderMap) -> Result<&str, Denied> {
    let missing = || {
        Denied::new(
            ErrorKind::Unauthenticated,
            "this server requires a token: send `authorization: Bearer TOKEN` (the ork CLI and SDKs read ORK_TOKEN or --token); an admin makes one with `ork token create`",
        )
    };
    let value = headers.get(AUTHORIZATION).ok_or_else(missing)?;
    let text = value.to_str().map_err(|_| missing())?;
    let (scheme, credential) = text.split_once(' ').ok_or_else(missing)?;
    let credential = credential.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || credential.is_empty() {
        return Err(missing());
    }
    Ok(credential)
}

fn rejected(reason: credentials::Rejected) -> Denied {
    use credentials::Rejected;
    match reason {
        Rejected::Unknown => Denied::new(
            ErrorKind::Unauthenticated,
            "unknown token: it was never made by this server (check ORK_TOKEN / --token)",
        ),
        Rejected::Expired { name, at } => Denied::new(
            ErrorKind::Unauthenticated,
            format!(
                "token `{name}` expired at {}; an admin makes a new one with `ork token create`",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        ),
        Rejected::Revoked { name } => Denied::new(
            ErrorKind::Unauthenticated,
            format!("token `{name}` was revoked; an admin makes a new one with `ork token create`"),
        ),
        Rejected::Unavailable(message) => {
            tracing::warn!(error = %message, "cannot read the token store");
            Denied::new(
                ErrorKind::Unavailable,
                "the token store cannot be read right now; retry",
            )
        }
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The layer itself (`axum::middleware::from_fn_with_state`).
pub async fn layer(State(auth): State<Arc<Auth>>, request: Request, next: Next) -> Response {
    let grpc = is_grpc(request.headers());
    match auth.authorize(request, grpc).await {
        Ok(request) => next.run(request).await,
        Err(denied) => denied.into_response(grpc),
    }
}
