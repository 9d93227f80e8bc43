package ork

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// startTaskSpan starts the span `task <name>` as a child of the attempt's
// span named by traceparent (the W3C trace context the server sends with
// every attempt), so the spans a task function starts from its Context land
// in its run's trace. It uses the global OpenTelemetry tracer provider: with
// none installed (otel.SetTracerProvider), it costs nothing.
func startTaskSpan(ctx context.Context, name, traceparent string) (context.Context, trace.Span) {
	if traceparent != "" {
		carrier := propagation.MapCarrier{"traceparent": traceparent}
		ctx = propagation.TraceContext{}.Extract(ctx, carrier)
	}
	return otel.Tracer("ork").Start(ctx, "task "+name)
}
