//! The one table that maps error kinds to gRPC codes (and, for the HTTP
//! gateway, to HTTP statuses).

use tonic::{Code, Status};

use crate::state;

/// Error kinds every API surface shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    FailedPrecondition,
    Unavailable,
    Internal,
    /// A request larger than the server accepts (HTTP bodies, gRPC messages),
    /// the code tonic itself uses for an oversized message.
    TooLarge,
    /// An HTTP method the path does not serve.
    MethodNotAllowed,
    /// No credential, or one the server does not accept (unknown, expired,
    /// revoked).
    Unauthenticated,
    /// A valid credential whose role does not allow the call.
    PermissionDenied,
    /// Too many requests of one kind from one token; retry later.
    RateLimited,
}

/// `(kind, gRPC code, HTTP status)`: the single source of the mapping.
pub const ERROR_TABLE: &[(ErrorKind, Code, u16)] = &[
    (ErrorKind::InvalidArgument, Code::InvalidArgument, 400),
    (ErrorKind::NotFound, Code::NotFound, 404),
    (ErrorKind::FailedPrecondition, Code::FailedPrecondition, 409),
    (ErrorKind::Unavailable, Code::Unavailable, 503),
    (ErrorKind::Internal, Code::Internal, 500),
    (ErrorKind::TooLarge, Code::OutOfRange, 413),
    (ErrorKind::MethodNotAllowed, Code::Unimplemented, 405),
    (ErrorKind::Unauthenticated, Code::Unauthenticated, 401),
    (ErrorKind::PermissionDenied, Code::PermissionDenied, 403),
    (ErrorKind::RateLimited, Code::ResourceExhausted, 429),
];

impl ErrorKind {
    pub fn grpc_code(self) -> Code {
        ERROR_TABLE
            .iter()
            .find(|(k, _, _)| *k == self)
            .map_or(Code::Internal, |(_, c, _)| *c)
    }

    pub fn http_status(self) -> u16 {
        ERROR_TABLE
            .iter()
            .find(|(k, _, _)| *k == self)
            .map_or(500, |(_, _, h)| *h)
    }
}

/// The HTTP status of a gRPC code, from the same table; codes no kind maps
/// to are server errors.
pub fn http_status_of_code(code: Code) -> u16 {
    ERROR_TABLE
        .iter()
        .find(|(_, c, _)| *c == code)
        .map_or(500, |(_, _, h)| *h)
}

/// The kind of a state-store error.
pub fn state_error_kind(e: &state::Error) -> ErrorKind {
    match e {
        state::Error::NotFound { .. } => ErrorKind::NotFound,
        state::Error::Stale { .. } | state::Error::FailedPrecondition(_) => {
            ErrorKind::FailedPrecondition
        }
        state::Error::InvalidArgument(_)
        | state::Error::InvalidOutput(_)
        | state::Error::UnsupportedUrl(_) => ErrorKind::InvalidArgument,
        state::Error::Database(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)) => {
            ErrorKind::Unavailable
        }
        state::Error::Database(_) | state::Error::Migrate(_) | state::Error::Corrupt(_) => {
            ErrorKind::Internal
        }
    }
}

/// Builds a status of `kind`.
pub fn status(kind: ErrorKind, message: impl Into<String>) -> Status {
    Status::new(kind.grpc_code(), message)
}

/// Converts a state error, logging internal ones (their details stay in the log).
pub fn from_state(e: state::Error) -> Status {
    let kind = state_error_kind(&e);
    if kind == ErrorKind::Internal {
        tracing::error!(error = %e, "internal error");
    }
    status(kind, e.to_string())
}

/// Converts a refused report.
pub fn from_report(e: crate::reports::Error) -> Status {
    match e {
        crate::reports::Error::State(e) => from_state(e),
        crate::reports::Error::InvalidArgument(m) => status(ErrorKind::InvalidArgument, m),
        crate::reports::Error::Unavailable(m) => status(ErrorKind::Unavailable, m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_in_the_table_once() {
        for kind in [
            ErrorKind::InvalidArgument,
            ErrorKind::NotFound,
            ErrorKind::FailedPrecondition,
            ErrorKind::Unavailable,
            ErrorKind::Internal,
            ErrorKind::TooLarge,
            ErrorKind::MethodNotAllowed,
            ErrorKind::Unauthenticated,
            ErrorKind::PermissionDenied,
            ErrorKind::RateLimited,
        ] {
            assert_eq!(
                ERROR_TABLE.iter().filter(|(k, _, _)| *k == kind).count(),
                1,
                "{kind:?}"
            );
            // One kind per code, so a gRPC status maps back to one HTTP status.
            let code = kind.grpc_code();
            assert_eq!(
                ERROR_TABLE.iter().filter(|(_, c, _)| *c == code).count(),
                1,
                "{code:?}"
            );
            assert_eq!(http_status_of_code(code), kind.http_status());
        }
    }

    #[test]
    fn stale_attempts_are_failed_precondition() {
        let e = state::Error::Stale {
            task_run_id: "t".into(),
            attempt: 1,
            current_attempt: 2,
            status: "running".into(),
        };
        assert_eq!(from_state(e).code(), Code::FailedPrecondition);
    }
}
