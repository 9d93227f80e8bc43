//! `GET /metrics`: the Prometheus scrape endpoint, on the server's one port.
//!
//! The gauges are read from committed state when the scrape arrives; the
//! counters and histograms are kept by [`crate::metrics::Metrics`].
//!
//! Who may scrape: with a metrics token (`--metrics-token`), a scrape that
//! carries it as its bearer token is served. On a server with tokens on,
//! any API token that may read (viewer and up) is served too, checked by the
//! auth layer's own rules (`/metrics` is no gRPC method, so it asks what an
//! unknown path asks: a reading role). With tokens off (`ork dev` on
//! loopback) and no metrics token, `/metrics` is open.

use axum::Router;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::ApiContext;
use super::error::ErrorKind;
use super::gateway::ApiError;
use crate::auth::Auth;
use crate::options::{AuthMode, BearerToken};

#[derive(Clone)]
struct Scrape {
    ctx: ApiContext,
    auth: Arc<Auth>,
    token: Option<BearerToken>,
}

/// The `/metrics` route.
pub fn router(ctx: ApiContext, auth: Arc<Auth>, token: Option<BearerToken>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(Scrape { ctx, auth, token })
}

async fn scrape(State(scrape): State<Scrape>, request: Request) -> Response {
    let admitted_by_token = scrape.token.as_ref().is_some_and(|token| {
        token.admits(
            request
                .headers()
                .get(header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
        )
    });
    if !admitted_by_token && scrape.auth.mode() == AuthMode::Tokens {
        if let Err(denied) = scrape.auth.authorize(request, false).await {
            return denied.into_response(false);
        }
    } else if !admitted_by_token && scrape.token.is_some() {
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
