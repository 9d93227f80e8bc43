//! Traces: the trace context of runs and attempts, their spans, and a span
//! per RPC.
//!
//! A run's trace id *is* its run id (a UUID is 16 bytes, like a trace id),
//! and the span ids of a run and of each attempt are derived from their ids,
//! so every replica computes the same context from the database alone: the
//! `traceparent` put in a task's spec names the attempt's span, and the
//! worker SDKs continue it, so a task's own spans land under its attempt in
//! its run's trace. The run and attempt spans themselves are exported when
//! they end (from the store's committed changes, with their real start and
//! end times). RPCs and state transactions are `tracing` spans, exported by
//! the OpenTelemetry layer the binary installs (`--otlp-endpoint`).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks, SpanProcessor};
use sha2::{Digest as _, Sha256};

use crate::notify::Observer;
use crate::state::{AttemptOutcome, FinishedAttempt, Transition};

/// The trace id of a run: its UUID's bytes (a hash of the id for ids that
/// are not UUIDs).
pub fn run_trace_id(run_id: &str) -> TraceId {
    match uuid::Uuid::parse_str(run_id) {
        Ok(uuid) if !uuid.is_nil() => TraceId::from_bytes(*uuid.as_bytes()),
        _ => {
            let digest = Sha256::digest(run_id.as_bytes());
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&digest[..16]);
            TraceId::from_bytes(bytes)
        }
    }
}

fn span_id_of(parts: &[&[u8]]) -> SpanId {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
        hasher.update([0u8]);
    }
    let digest = hasher.finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    if bytes == [0u8; 8] {
        // An all-zero span id is invalid; a digest of zeros is vanishingly rare.
        bytes[7] = 1;
    }
    SpanId::from_bytes(bytes)
}

/// The span id of a run's own span, the root of its trace.
pub fn run_span_id(run_id: &str) -> SpanId {
    span_id_of(&[b"run", run_id.as_bytes()])
}

/// The span id of one attempt, a child of its run's span.
pub fn attempt_span_id(task_run_id: &str, attempt: u32) -> SpanId {
    span_id_of(&[
        b"attempt",
        task_run_id.as_bytes(),
        attempt.to_string().as_bytes(),
    ])
}

/// The W3C `traceparent` of an attempt's span (sampled).
pub fn attempt_traceparent(run_id: &str, task_run_id: &str, attempt: u32) -> String {
    format!(
        "00-{}-{}-01",
        run_trace_id(run_id),
        attempt_span_id(task_run_id, attempt)
    )
}

/// Where the spans of runs and attempts go: the span processor (batching,
/// export) the binary configured. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SpanSink(Arc<dyn SpanProcessor>);

impl SpanSink {
    pub fn new(processor: impl SpanProcessor + 'static) -> Self {
        Self(Arc::new(processor))
    }

    /// Exports what is buffered (at shutdown).
    pub fn flush(&self) {
        if let Err(e) = self.0.force_flush() {
            tracing::warn!(error = %e, "could not export the last run and attempt spans");
        }
    }
}

/// Longest error text put on a span.
const MAX_SPAN_ERROR: usize = 1024;

/// Turns committed run and attempt ends into spans.
pub struct RunSpans {
    sink: SpanSink,
    scope: InstrumentationScope,
}

impl RunSpans {
    pub fn new(sink: SpanSink) -> Self {
        Self {
            sink,
            scope: InstrumentationScope::builder("ork")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        }
    }

    fn span(
        &self,
        context: SpanContext,
        parent: SpanId,
        name: String,
        times: (DateTime<Utc>, DateTime<Utc>),
        attributes: Vec<KeyValue>,
        status: Status,
    ) -> SpanData {
        let (start, end) = times;
        SpanData {
            span_context: context,
            parent_span_id: parent,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: Cow::Owned(name),
            start_time: SystemTime::from(start),
            end_time: SystemTime::from(end.max(start)),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        }
    }

    fn attempt_span(&self, a: &FinishedAttempt) -> SpanData {
        let context = SpanContext::new(
            run_trace_id(&a.run_id),
            attempt_span_id(&a.task_run_id, a.attempt),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let mut attributes = vec![
            KeyValue::new("ork.run_id", a.run_id.clone()),
            KeyValue::new("ork.workflow", a.workflow.clone()),
            KeyValue::new("ork.task", a.task.clone()),
            KeyValue::new("ork.task_run_id", a.task_run_id.clone()),
            KeyValue::new("ork.attempt", i64::from(a.attempt)),
            KeyValue::new("ork.outcome", a.outcome.as_str()),
        ];
        if let Some(index) = a.parallel_index {
            attributes.push(KeyValue::new("ork.parallel_index", i64::from(index)));
        }
        for m in &a.metrics {
            attributes.push(KeyValue::new(format!("ork.metric.{}", m.name), m.value));
        }
        let status = match a.outcome {
            AttemptOutcome::Success => Status::Ok,
            _ => Status::error(truncate(a.error.as_deref().unwrap_or(a.outcome.as_str()))),
        };
        self.span(
            context,
            run_span_id(&a.run_id),
            format!("attempt {}", a.task),
            (a.dispatched_at, a.finished_at),
            attributes,
            status,
        )
    }
}

fn truncate(text: &str) -> String {
    if text.len() <= MAX_SPAN_ERROR {
        return text.to_owned();
    }
    let mut cut = MAX_SPAN_ERROR;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}

impl Observer for RunSpans {
    fn committed(&self, transitions: &[Transition]) {
        for transition in transitions {
            let span = match transition {
                Transition::RunFinished {
                    run_id,
                    workflow,
                    status,
                    created_at,
                    finished_at,
                    ..
                } => {
                    let context = SpanContext::new(
                        run_trace_id(run_id),
                        run_span_id(run_id),
                        TraceFlags::SAMPLED,
                        false,
                        TraceState::default(),
                    );
                    let span_status = match status {
                        ork_domain::RunStatus::Success => Status::Ok,
                        other => Status::error(format!("the run ended {other}")),
                    };
                    self.span(
                        context,
                        SpanId::INVALID,
                        format!("run {workflow}"),
                        (*created_at, *finished_at),
                        vec![
                            KeyValue::new("ork.run_id", run_id.clone()),
                            KeyValue::new("ork.workflow", workflow.clone()),
                            KeyValue::new("ork.status", status.as_str()),
                        ],
                        span_status,
                    )
                }
                Transition::AttemptFinished(a) => self.attempt_span(a),
                _ => continue,
            };
            self.sink.0.on_end(span);
        }
    }
}

/// Reads `traceparent` from HTTP headers.
struct HeaderExtractor<'a>(&'a axum::http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Wraps every request in an `rpc` span (named after the gRPC method, or
/// `HTTP <METHOD>` for the REST gateway), continuing the caller's
/// `traceparent` when it sends one. Scrapes of `/metrics` are not traced.
pub async fn trace_request(request: Request, next: Next) -> Response {
    use opentelemetry::propagation::TextMapPropagator as _;
    use tracing::Instrument as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    let path = request.uri().path();
    if path == "/metrics" {
        return next.run(request).await;
    }
    let grpc = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let name = if grpc {
        path.trim_start_matches('/').to_owned()
    } else {
        format!("HTTP {}", request.method())
    };
    let span = tracing::info_span!(
        "rpc",
        otel.name = %name,
        otel.kind = "server",
        rpc.system = if grpc { "grpc" } else { "http" },
        url.path = %path,
        run_id = tracing::field::Empty,
        task_run_id = tracing::field::Empty,
    );
    if request.headers().contains_key("traceparent") {
        let parent = opentelemetry_sdk::propagation::TraceContextPropagator::new()
            .extract(&HeaderExtractor(request.headers()));
        let _ = span.set_parent(parent);
    }
    next.run(request).instrument(span).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_trace_id_is_its_uuid() {
        let run = "0194d3a2-7c1e-7b4a-9f00-123456789abc";
        assert_eq!(
            run_trace_id(run).to_string(),
            "0194d3a27c1e7b4a9f00123456789abc"
        );
        let other = run_trace_id("not-a-uuid");
        assert_ne!(other, TraceId::INVALID);
        assert_eq!(other, run_trace_id("not-a-uuid"));
    }

    #[test]
    fn span_ids_are_stable_and_distinct() {
        let a1 = attempt_span_id("tr-1", 1);
        assert_eq!(a1, attempt_span_id("tr-1", 1));
        assert_ne!(a1, attempt_span_id("tr-1", 2));
        assert_ne!(a1, attempt_span_id("tr-2", 1));
        assert_ne!(run_span_id("tr-1"), a1);
        assert_ne!(a1, SpanId::INVALID);
    }

    #[test]
    fn traceparent_names_the_attempt_span_in_the_run_trace() {
        let run = "0194d3a2-7c1e-7b4a-9f00-123456789abc";
        let tp = attempt_traceparent(run, "tr-1", 3);
        assert_eq!(
            tp,
            format!(
                "00-0194d3a27c1e7b4a9f00123456789abc-{}-01",
                attempt_span_id("tr-1", 3)
            )
        );
        assert_eq!(tp.len(), 55);
    }
}
