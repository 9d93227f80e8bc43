"""Continuing a run's trace in a task.

The server hands every attempt the W3C ``traceparent`` of the attempt's span
(``Context.traceparent``; launched tasks also get ``TRACEPARENT`` in their
environment). When the OpenTelemetry API is installed
(``pip install 'ork-sdk[otel]'``) the SDK runs each task function inside a
``task <name>`` span that is a child of the attempt's span, so the spans the
function opens itself land in the run's trace. Without it, nothing happens.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

__all__ = ["task_span"]


@contextlib.contextmanager
def task_span(name: str, traceparent: str) -> Iterator[None]:
    """Runs the block inside ``task <name>``, parented to ``traceparent``."""
    try:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError:
        yield
        return
    parent = TraceContextTextMapPropagator().extract({"traceparent": traceparent}) if traceparent else None
    tracer = trace.get_tracer("ork")
    with tracer.start_as_current_span(f"task {name}", context=parent, kind=trace.SpanKind.INTERNAL):
        yield
