//! Continuing a run's trace: the W3C `traceparent` the server puts in each
//! task's spec names the attempt's span; a pool handler runs inside a
//! `tracing` span parented to it, so with an OpenTelemetry layer installed
//! (`tracing-opentelemetry`) the handler's own spans join its run's trace.

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};

/// Parses a `traceparent` value (`00-<trace id>-<span id>-<flags>`); `None`
/// when it is empty or malformed.
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let (Some(version), Some(trace), Some(span), Some(flags)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if version != "00" || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let context = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    );
    context.is_valid().then_some(context)
}

/// The OpenTelemetry context whose parent is the span `traceparent` names.
pub fn parent_context(traceparent: &str) -> Option<opentelemetry::Context> {
    parse_traceparent(traceparent)
        .map(|span| opentelemetry::Context::new().with_remote_span_context(span))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_parse() {
        let tp = "00-0194d3a27c1e7b4a9f00123456789abc-00f067aa0ba902b7-01";
        let sc = parse_traceparent(tp).expect("valid");
        assert_eq!(
            sc.trace_id().to_string(),
            "0194d3a27c1e7b4a9f00123456789abc"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        assert!(parse_traceparent("").is_none());
        assert!(
            parse_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none()
        );
        assert!(parse_traceparent("01-abc-def-01").is_none());
    }
}
