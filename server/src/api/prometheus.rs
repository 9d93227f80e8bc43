//! `GET /metrics`: the Prometheus scrape endpoint, on the server's one port.
//!
//! The gauges are read from committed state when the scrape arrives; the
//! counters and histograms are kept by [`crate::metrics::Metrics`]. When the
//! server has a metrics token, a scrape must carry it as a bearer token.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::ApiContext;
use super::error::ErrorKind;
use super::gateway::ApiError;
use crate::options::BearerToken;

#[derive(Clone)]
struct Scrape {
    ctx: ApiContext,
    token: Option<BearerToken>,
}

/// The `/metrics` route.
pub fn router(ctx: ApiContext, token: Option<BearerToken>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(Scrape { ctx, token })
}

async fn scrape(State(scrape): State<Scrape>, headers: HeaderMap) -> Response {
    if let Some(token) = &scrape.token
        && !token.admits(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()))
    {
        let mut response = ApiError::new(
            ErrorKind::Unauthenticated,
            None,
            "this server's /metrics needs `Authorization: Bearer <token>` (the server's --metrics-token)",
        )
        .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
        return response;
    }
    let ctx = &scrape.ctx;
    match ctx.state.queue_stats(&ctx.owner, chrono::Utc::now()).await {
        Ok(queue) => ctx.metrics.set_gauges(&queue, ctx.pool.stats()),
        // The counters are still worth serving; the gauges keep their last value.
        Err(e) => tracing::warn!(error = %e, "could not read the queue for /metrics"),
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, crate::metrics::Metrics::CONTENT_TYPE)],
        ctx.metrics.encode(),
    )
        .into_response()
}
