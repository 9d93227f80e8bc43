"""The per-attempt :class:`Context` handed to task functions."""

from __future__ import annotations

import logging
import re
import sys
import threading
from datetime import datetime, timedelta, timezone
from typing import Callable, Optional, TextIO

from ._metrics import Metrics

__all__ = ["Context"]

_LOG_FORMAT = "%(levelname)s %(message)s"


class Context:
    """What a task attempt knows about itself, plus its logger and cancel flag.

    ork creates one for every attempt and passes it to task functions whose
    signature asks for it (``def f(ctx, input)``). Attributes:

    - ``run_id``, ``workflow``, ``task_name``: the run and the task being run.
    - ``task_run_id``, ``attempt``: the task instance and its attempt number
      (counting from 1).
    - ``parallel_index``, ``parallel_count``: this instance's position in a
      fan-out, or ``None`` for a task that does not fan out.
    - ``deadline``: when the server will stop the attempt (timezone-aware UTC),
      or ``None``.
    - ``log``: a :class:`logging.Logger` whose records become lines of the
      task's log.
    - ``cancelled``: ``True`` once the server asked the attempt to stop; long
      tasks should check it and return (or raise) promptly.
    - ``metrics``: figures to record for this attempt,
      ``ctx.metrics.record("rows", 1200)`` (see :class:`ork.Metrics`).
    - ``traceparent``: the W3C trace context of this attempt's span (empty
      when the server sent none).
    """

    def __init__(
        self,
        *,
        run_id: str = "",
        workflow: str = "",
        task_name: str = "",
        task_run_id: str = "",
        attempt: int = 1,
        parallel_index: Optional[int] = None,
        parallel_count: Optional[int] = None,
        deadline: Optional[datetime] = None,
        log_sink: Optional[Callable[[str], None]] = None,
        log_stream: Optional[TextIO] = None,
        traceparent: str = "",
    ) -> None:
        """Builds a context; ork does this, tests of task functions may too.

        ``log_sink`` receives each formatted log line; without it lines go to
        ``log_stream`` (default: ``sys.stderr``).
        """
        self.run_id = run_id
        self.workflow = workflow
        self.task_name = task_name
        self.task_run_id = task_run_id
        self.attempt = attempt
        self.parallel_index = parallel_index
        self.parallel_count = parallel_count
        self.deadline = deadline
        self.traceparent = traceparent
        self.metrics = Metrics()
        self._cancel = threading.Event()
        self.log = _make_logger(task_name or "task", log_sink, log_stream)

    @property
    def cancelled(self) -> bool:
        """Whether the server asked this attempt to stop."""
        return self._cancel.is_set()

    def wait_cancelled(self, timeout: Optional[float] = None) -> bool:
        """Blocks until the attempt is cancelled or ``timeout`` seconds pass.

        Returns :attr:`cancelled`, so ``ctx.wait_cancelled(5)`` is a sleep that
        ends early on cancellation.
        """
        return self._cancel.wait(timeout)

    def time_left(self) -> Optional[timedelta]:
        """Time until :attr:`deadline`, or ``None`` when there is none."""
        if self.deadline is None:
            return None
        return self.deadline - datetime.now(timezone.utc)

    def _set_cancelled(self) -> None:
        self._cancel.set()

    def __repr__(self) -> str:
        return (
            f"Context(run_id={self.run_id!r}, task_name={self.task_name!r}, "
            f"attempt={self.attempt}, parallel_index={self.parallel_index!r})"
        )


class _SinkHandler(logging.Handler):
    """Sends each formatted record, one line at a time, to a callable."""

    def __init__(self, sink: Callable[[str], None]) -> None:
        super().__init__()
        self._sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 - logging must never fail a task
            self.handleError(record)
            return
        for line in text.splitlines() or [""]:
            self._sink(line)


class _StreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the stream that is ``sys.stderr`` at the time of the write.

    Looking the stream up late matters in pool mode, where ``sys.stderr`` is a
    proxy that routes lines to the running task's log.
    """

    def __init__(self, stream: Optional[TextIO]) -> None:
        super().__init__(stream)
        self._fixed = stream

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = self._fixed if self._fixed is not None else sys.stderr
        super().emit(record)


def _make_logger(
    name: str, sink: Optional[Callable[[str], None]], stream: Optional[TextIO]
) -> logging.Logger:
    # A Logger built directly is not registered in logging's global tree, so
    # each attempt has its own handlers and nothing leaks into the root logger.
    logger = logging.Logger(f"ork.task.{name}", level=logging.DEBUG)
    logger.propagate = False
    handler: logging.Handler = _SinkHandler(sink) if sink is not None else _StreamHandler(stream)
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    logger.addHandler(handler)
    return logger


_RFC3339 = re.compile(
    r"^(?P<base>\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d+))?(?P<tz>[Zz]|[+-]\d{2}:\d{2})$"
)


def parse_rfc3339(text: str) -> Optional[datetime]:
    """Parses an RFC 3339 timestamp into an aware UTC datetime.

    Accepts ``Z`` and any number of fraction digits (chrono writes nine), which
    :meth:`datetime.fromisoformat` rejects before Python 3.11. Returns ``None``
    for an empty or malformed value rather than failing the task over it.
    """
    match = _RFC3339.match(text.strip())
    if match is None:
        return None
    frac = (match.group("frac") or "")[:6].ljust(6, "0")
    tz = match.group("tz")
    tz = "+00:00" if tz in ("Z", "z") else tz
    try:
        parsed = datetime.fromisoformat(f"{match.group('base').replace('t', 'T').replace(' ', 'T')}.{frac}{tz}")
    except ValueError:
        return None
    return parsed.astimezone(timezone.utc)
