//! Least privilege for workers: a worker call may touch only the attempt its
//! credential belongs to.
//!
//! Every unary `WorkerService` request names its attempt in field 1
//! (`AttemptRef attempt = 1`; a test checks this from the descriptors), so
//! the layer reads that one field from the gRPC frame without decoding the
//! rest. Then:
//! - a launched worker's credential is its attempt's token: it must be the
//!   token of the attempt the request names. The handler's fence check
//!   (the attempt must be current) does the rest, so the credential is
//!   useless once its attempt ended.
//! - a pool worker's credential is a worker token: the attempt must be one
//!   the server pushed to a session that this token attached (bound in the
//!   pool registry when the assignment was reserved).

use axum::body::{Body, Bytes};
use axum::extract::Request;
use ork_proto::v1;
use subtle::ConstantTimeEq as _;

use crate::api::error::ErrorKind;
use crate::executor::WorkerPool;
use crate::state::tokens::TokenRecord;

use super::Denied;

/// The gRPC method path prefix of the worker calls.
pub const WORKER_SERVICE: &str = "/ork.v1.WorkerService/";
/// The pool session: authenticated by a worker token, never by an attempt.
pub const SESSION: &str = "/ork.v1.WorkerService/Session";

/// Whether `path` is a unary worker call that names its attempt.
pub fn is_attempt_call(path: &str) -> bool {
    path.starts_with(WORKER_SERVICE) && path != SESSION
}

/// Any `WorkerService` request, read only as far as its attempt.
#[derive(Clone, PartialEq, prost::Message)]
struct AttemptOnly {
    #[prost(message, optional, tag = "1")]
    attempt: Option<v1::AttemptRef>,
}

/// Buffers a unary gRPC request (at most `limit` bytes of message) and reads
/// the attempt it names; the request goes on with the same bytes.
pub async fn read_attempt(
    request: Request,
    limit: usize,
) -> Result<(Request, Option<v1::AttemptRef>), Denied> {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, limit.saturating_add(5))
        .await
        .map_err(|_| {
            Denied::new(
                ErrorKind::TooLarge,
                format!("the request is larger than the server's limit of {limit} bytes (--max-message-bytes)"),
            )
        })?;
    let attempt = attempt_of(&bytes);
    Ok((Request::from_parts(parts, Body::from(bytes)), attempt))
}

/// The attempt in the first (only) uncompressed gRPC message of `body`.
fn attempt_of(body: &Bytes) -> Option<v1::AttemptRef> {
    use prost::Message as _;
    let (&flag, rest) = body.split_first()?;
    if flag != 0 || rest.len() < 4 {
        return None;
    }
    let len = usize::try_from(u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]])).ok()?;
    let message = rest.get(4..4 + len)?;
    AttemptOnly::decode(message).ok()?.attempt
}

fn describe(attempt: &v1::AttemptRef) -> String {
    format!(
        "attempt {} of task run {}",
        attempt.attempt, attempt.task_run_id
    )
}

/// A launched worker's credential (`bearer`) must be the token of the
/// attempt its request names.
pub fn check_attempt_credential(
    bearer: &str,
    attempt: Option<&v1::AttemptRef>,
) -> Result<(), Denied> {
    let Some(attempt) = attempt else {
        return Err(Denied::new(
            ErrorKind::Unauthenticated,
            "this credential is not an API token (those start with `ork_`); a worker call authenticated by its attempt's token must name that attempt",
        ));
    };
    if bool::from(bearer.as_bytes().ct_eq(attempt.token.as_bytes())) {
        Ok(())
    } else {
        Err(Denied::new(
            ErrorKind::PermissionDenied,
            format!(
                "this credential belongs to another attempt than {}; an attempt's credential is valid only for its own calls",
                describe(attempt)
            ),
        ))
    }
}

/// A pool worker (worker token) may only touch attempts pushed to a session
/// it attached.
pub fn check_pool_attempt(
    pool: &WorkerPool,
    token: &TokenRecord,
    attempt: Option<&v1::AttemptRef>,
) -> Result<(), Denied> {
    let Some(attempt) = attempt else {
        return Err(Denied::new(
            ErrorKind::InvalidArgument,
            "field `attempt`: every worker call names its attempt (task_run_id, attempt, token)",
        ));
    };
    match pool.owner_of(&attempt.task_run_id, attempt.attempt) {
        Some(Some(owner)) if owner == token.id => Ok(()),
        Some(_) => Err(Denied::new(
            ErrorKind::PermissionDenied,
            format!(
                "{} is assigned to another worker's session; a pool worker reports only the attempts pushed to its own session",
                describe(attempt)
            ),
        )),
        None => Err(Denied::new(
            ErrorKind::PermissionDenied,
            format!(
                "{} was not pushed to a session of worker token `{}` on this server; a pool worker reports only the attempts pushed to its own session, on the server it is attached to",
                describe(attempt),
                token.name
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    fn frame(message: &impl prost::Message) -> Bytes {
        let body = message.encode_to_vec();
        let mut out = vec![0u8];
        out.extend_from_slice(&u32::try_from(body.len()).expect("small").to_be_bytes());
        out.extend_from_slice(&body);
        Bytes::from(out)
    }

    #[test]
    fn the_attempt_is_read_from_any_worker_request() {
        let attempt = v1::AttemptRef {
            task_run_id: "tr".into(),
            attempt: 2,
            token: "secret".into(),
        };
        let complete = v1::CompleteTaskRequest {
            metrics: Default::default(),
            attempt: Some(attempt.clone()),
            output: Some(ork_proto::json::to_proto(
                &serde_json::json!({"big": "x".repeat(1000)}),
            )),
        };
        assert_eq!(attempt_of(&frame(&complete)), Some(attempt.clone()));
        let logs = v1::AppendLogsRequest {
            attempt: Some(attempt.clone()),
            entries: vec![v1::LogEntry::default(); 3],
        };
        assert_eq!(attempt_of(&frame(&logs)), Some(attempt));
        assert_eq!(attempt_of(&frame(&v1::HeartbeatRequest::default())), None);
        assert_eq!(
            attempt_of(&Bytes::from_static(b"\x01\0\0\0\0")),
            None,
            "compressed"
        );
        assert_eq!(
            attempt_of(&Bytes::from_static(b"\0\0\0\0\x09abc")),
            None,
            "short"
        );
        assert_eq!(attempt_of(&Bytes::new()), None);
    }

    #[test]
    fn an_attempt_credential_fits_only_its_attempt() {
        let attempt = v1::AttemptRef {
            task_run_id: "tr".into(),
            attempt: 1,
            token: "abc".into(),
        };
        assert!(check_attempt_credential("abc", Some(&attempt)).is_ok());
        let denied = check_attempt_credential("abd", Some(&attempt)).expect_err("other");
        assert_eq!(denied.kind, ErrorKind::PermissionDenied);
        let denied = check_attempt_credential("abc", None).expect_err("none");
        assert_eq!(denied.kind, ErrorKind::Unauthenticated);
        let _ = v1::AttemptRef::default().encode_to_vec();
    }
}
