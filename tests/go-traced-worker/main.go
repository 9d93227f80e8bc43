// Command go-traced-worker is a Go pool worker that exports OpenTelemetry
// traces: the trace test of the Python SDK's suite runs it next to a Python
// worker and checks that the spans its handler opens land in the run's trace,
// under the attempt. It serves one handler, go_traced, which opens a span of
// its own and records a metric.
//
//	go-traced-worker -server http://127.0.0.1:7400 -otlp http://127.0.0.1:4317
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	ork "github.com/ork-run/ork/sdks/go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
)

// Text is the input and output of go_traced.
type Text struct {
	Text string `json:"text"`
}

func traced(ctx *ork.Context, in Text) (Text, error) {
	_, span := otel.Tracer("go-traced-worker").Start(ctx, "go_child")
	defer span.End()
	if err := ctx.Metrics.Record("chars", float64(len(in.Text))); err != nil {
		return Text{}, err
	}
	return Text{Text: strings.ToUpper(in.Text)}, nil
}

func main() {
	server := flag.String("server", "http://127.0.0.1:7400", "the ork server")
	endpoint := flag.String("otlp", "", "the collector's OTLP/gRPC URL")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	exporter, err := otlptracegrpc.New(ctx,
		otlptracegrpc.WithEndpointURL(*endpoint), otlptracegrpc.WithInsecure())
	if err != nil {
		fmt.Fprintln(os.Stderr, "exporter:", err)
		os.Exit(1)
	}
	provider := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exporter, sdktrace.WithBatchTimeout(200*time.Millisecond)),
		sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName("go-traced-worker"))),
	)
	otel.SetTracerProvider(provider)

	worker := ork.NewWorker([]ork.TaskDef{ork.Task("go_traced", traced)},
		ork.WithServer(*server), ork.WithSlots(2), ork.WithName("go-traced"))
	runErr := worker.Run(ctx)
	flushCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := provider.Shutdown(flushCtx); err != nil {
		fmt.Fprintln(os.Stderr, "flushing spans:", err)
	}
	if runErr != nil {
		fmt.Fprintln(os.Stderr, runErr)
		os.Exit(1)
	}
}
