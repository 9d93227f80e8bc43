"""Launched mode: one task attempt per process, under the ``ork-worker`` supervisor.

The supervisor owns heartbeats, log capture (this process's stdout and stderr
lines become the task's log), timeouts and kills, and reports the result. This
module only speaks through files and the environment:

- the input is the JSON file named by ``ORK_INPUT``;
- the output is written as JSON to the file named by ``ORK_OUTPUT``;
- on failure the full traceback goes to the file named by ``ORK_ERROR`` (and
  to stderr), and the process exits 1, or 3 for :class:`NonRetryable`;
- what the task records with ``ctx.metrics.record`` is written, success or
  failure, to the file named by ``ORK_METRICS`` as ``name value`` lines;
- the task runs inside a span continuing ``TRACEPARENT`` when OpenTelemetry
  is installed;
- SIGTERM from the supervisor sets :attr:`Context.cancelled`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from types import FrameType
from typing import Any, Callable, Mapping, NoReturn, Optional

from ._context import Context, parse_rfc3339
from ._errors import NonRetryable
from ._metrics import format_file
from ._task import definition_of, format_error
from ._trace import task_span

__all__ = ["run", "EXIT_FAILED", "EXIT_NON_RETRYABLE"]

#: Exit code of a failed attempt that may be retried.
EXIT_FAILED = 1
#: Exit code that tells the supervisor not to retry the attempt.
EXIT_NON_RETRYABLE = 3


def run(fn: Callable[..., Any]) -> NoReturn:
    """Runs ``fn`` as this process's task attempt, then exits.

    Use it at the bottom of a task file::

        if __name__ == "__main__":
            ork.run(my_task)

    Outside ork (no ``ORK_INPUT``) the input is the JSON in the first
    command-line argument (default ``{}``) and the output is printed, so a task
    file can be tried by hand: ``python3 task.py '{"n": 3}'``.
    """
    raise SystemExit(run_attempt(fn, os.environ, sys.argv[1:]))


def context_from_env(env: Mapping[str, str]) -> Context:
    """The :class:`Context` described by the supervisor's ``ORK_*`` variables."""

    def optional_int(name: str) -> Optional[int]:
        value = env.get(name, "").strip()
        return int(value) if value.isdigit() else None

    return Context(
        run_id=env.get("ORK_RUN_ID", ""),
        workflow=env.get("ORK_WORKFLOW", ""),
        task_name=env.get("ORK_TASK_NAME", ""),
        task_run_id=env.get("ORK_TASK_RUN_ID", ""),
        attempt=optional_int("ORK_ATTEMPT") or 1,
        parallel_index=optional_int("ORK_PARALLEL_INDEX"),
        parallel_count=optional_int("ORK_PARALLEL_COUNT"),
        deadline=parse_rfc3339(env.get("ORK_DEADLINE", "")),
        traceparent=env.get("TRACEPARENT", ""),
    )


def run_attempt(fn: Callable[..., Any], env: Mapping[str, str], argv: list[str]) -> int:
    """Runs one attempt of ``fn`` as described by ``env``; returns the exit code."""
    definition = definition_of(fn)
    ctx = context_from_env(env)
    _install_sigterm(ctx)
    input_path = env.get("ORK_INPUT")
    output_path = env.get("ORK_OUTPUT")
    error_path = env.get("ORK_ERROR")
    try:
        raw_input = _read_input(input_path, argv)
        with task_span(definition.name, ctx.traceparent):
            output = definition.call(ctx, raw_input)
    except NonRetryable as e:
        _write_metrics(ctx, env.get("ORK_METRICS"))
        _report_error(format_error(e), error_path)
        return EXIT_NON_RETRYABLE
    except Exception as e:  # noqa: BLE001 - every task failure is reported
        _write_metrics(ctx, env.get("ORK_METRICS"))
        _report_error(format_error(e), error_path)
        return EXIT_FAILED
    _write_metrics(ctx, env.get("ORK_METRICS"))
    text = json.dumps(output)
    if output_path:
        with open(output_path, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        print(text)
    return 0


def _write_metrics(ctx: Context, path: Optional[str]) -> None:
    """Hands the recorded metrics to the supervisor (or prints them by hand)."""
    values = ctx.metrics.snapshot()
    if not values:
        return
    if not path:
        print(f"metrics: {values}", file=sys.stderr)
        return
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(format_file(values))
    except OSError as e:
        print(f"ork: could not write the metrics to ORK_METRICS ({path}): {e}", file=sys.stderr)


def _read_input(path: Optional[str], argv: list[str]) -> Any:
    if path:
        with open(path, encoding="utf-8") as f:
            content = f.read()
        return json.loads(content) if content.strip() else None
    if argv:
        return json.loads(argv[0])
    return {}


def _report_error(text: str, error_path: Optional[str]) -> None:
    # stderr always, so the traceback is in the task's log too; the file gives
    # the supervisor the whole text rather than the last lines of stderr.
    print(text, file=sys.stderr, flush=True)
    if error_path:
        try:
            with open(error_path, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as e:
            print(f"ork: could not write the error to ORK_ERROR ({error_path}): {e}", file=sys.stderr)


def _install_sigterm(ctx: Context) -> None:
    """Turns the supervisor's SIGTERM into :attr:`Context.cancelled`.

    The task then gets the supervisor's grace period to stop by itself before
    SIGKILL. Only the main thread may install handlers; elsewhere (a task run
    from a test's thread) the default behaviour stays.
    """

    def on_sigterm(signum: int, frame: Optional[FrameType]) -> None:
        ctx._set_cancelled()
        ctx.log.warning("received SIGTERM: the attempt is cancelled, stopping")

    try:
        signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:
        pass
