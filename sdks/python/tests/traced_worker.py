"""A Python pool worker that exports OpenTelemetry traces to a collector.

The trace test runs it as ``python traced_worker.py SERVER OTLP_ENDPOINT``:
its handler ``py_traced`` opens a span of its own and records a metric, and
the test checks both land where they should.
"""

from __future__ import annotations

import sys

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

import ork


@ork.task
def py_traced(ctx: ork.Context, input: dict) -> dict:
    with trace.get_tracer("traced-worker").start_as_current_span("py_child"):
        words = input["text"].split()
        ctx.metrics.record("words", len(words))
        return {"text": " ".join(words)}


def main() -> None:
    server, endpoint = sys.argv[1], sys.argv[2]
    provider = TracerProvider(resource=Resource.create({"service.name": "py-traced-worker"}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True), schedule_delay_millis=200)
    )
    trace.set_tracer_provider(provider)
    try:
        ork.Worker(tasks=[py_traced], server=server, slots=2, name="py-traced").run()
    finally:
        provider.shutdown()


if __name__ == "__main__":
    main()
