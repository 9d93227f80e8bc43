//! Signed webhooks: `POST /hooks/WORKFLOW` starts one run of a workflow that
//! declares `on: {webhook: {secret: NAME}}`, for GitHub-style callers.
//!
//! The caller authenticates by signature, not token, so this route sits
//! outside the auth layer: the body must carry `X-Hub-Signature-256:
//! sha256=HEX`, the HMAC-SHA256 of the raw body under the workflow's secret
//! (resolved on the server from its name, like task secrets), compared in
//! constant time. Anything else (no such workflow, no webhook, secret unset,
//! signature missing or wrong) is the same 401 and starts nothing, so an
//! unauthenticated caller learns nothing about what exists; the log says
//! which it was. A delivery id (`X-GitHub-Delivery` or `X-Ork-Delivery`)
//! makes a redelivery start nothing, as an event id does.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::post;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::ApiContext;
use super::error::ErrorKind;
use super::event_service::{Audience, publish};
use super::gateway::ApiError;

/// The signature header GitHub (and most webhook senders) use.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// Delivery-id headers, first found wins.
const DELIVERY_HEADERS: &[&str] = &["x-github-delivery", "x-ork-delivery"];
/// Event-name headers; without one the event is named `webhook`.
const EVENT_HEADERS: &[&str] = &["x-github-event", "x-ork-event"];

/// The webhook route, to be served outside the auth layer.
pub fn router(ctx: ApiContext) -> Router {
    let max = ctx.limits.max_body_bytes;
    Router::new()
        .route("/hooks/{workflow}", post(receive))
        .layer(DefaultBodyLimit::max(max))
        .with_state(Arc::new(ctx))
}

/// `sha256=` and the lowercase hex HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn refused(workflow: &str, why: &str) -> Response {
    tracing::warn!(%workflow, reason = why, "webhook call refused");
    ApiError::new(
        ErrorKind::Unauthenticated,
        None,
        format!(
            "webhook for `{}` refused: the {SIGNATURE_HEADER} signature does not match (or no webhook is configured for this workflow)",
            workflow.chars().take(64).collect::<String>()
        ),
    )
    .into_response()
}

fn header<'a>(headers: &'a HeaderMap, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| headers.get(*n))
        .and_then(|v| v.to_str().ok())
}

async fn receive(
    State(ctx): State<Arc<ApiContext>>,
    Path(workflow): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let record = match ctx.state.get_workflow(&workflow).await {
        Ok(Some(record)) => record,
        Ok(None) => return refused(&workflow, "no such workflow"),
        Err(e) => {
            return ApiError::from_status(&super::error::from_state(e)).into_response();
        }
    };
    let Some(secret_name) = record.version.definition.on.webhook_secret.clone() else {
        return refused(&workflow, "the workflow declares no `on: {webhook: ...}`");
    };
    let Some(secret) = ctx.secrets.secret(&secret_name) else {
        return refused(
            &workflow,
            &format!(
                "secret `{secret_name}` is not set on the server (ORK_SECRET_{secret_name} or the secrets folder)"
            ),
        );
    };
    let Some(given) = header(&headers, &[SIGNATURE_HEADER]) else {
        return refused(&workflow, "no signature header");
    };
    let expected = signature(secret.as_bytes(), &body);
    let given = given.trim().to_ascii_lowercase();
    if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
        return refused(&workflow, "bad signature");
    }
    // Signed: from here on, errors may say what is wrong.
    let data: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) | Err(_) => {
            return ApiError::new(
                ErrorKind::InvalidArgument,
                None,
                "the webhook body must be a JSON object (send `Content-Type: application/json` payloads)",
            )
            .into_response();
        }
    };
    let name = header(&headers, EVENT_HEADERS)
        .filter(|n| ork_domain::events::check_name(n).is_ok())
        .unwrap_or("webhook")
        .to_owned();
    let delivery = header(&headers, DELIVERY_HEADERS).map(str::to_owned);
    match publish(&ctx, &name, delivery, data, Audience::Workflow(&workflow)).await {
        Ok((id, published)) => (
            StatusCode::ACCEPTED,
            Json(json!({
                "id": id,
                "runs": published.runs.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
                "duplicate": !published.first,
            })),
        )
            .into_response(),
        Err(status) => ApiError::from_status(&status).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's documented example: secret "It's a Secret to Everybody",
    /// payload "Hello, World!".
    #[test]
    fn signature_matches_githubs_example() {
        assert_eq!(
            signature(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }
}
