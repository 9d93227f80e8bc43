"""Routes ``print`` output of pool-mode tasks to the task that printed it.

While a :class:`~ork.Worker` runs, ``sys.stdout`` and ``sys.stderr`` are
proxies: a write from a thread that runs a task attempt becomes log lines of
that attempt, any other write goes to the real stream. The attempt is found
through a context variable, which asyncio tasks inherit too.
"""

from __future__ import annotations

import contextvars
import sys
from typing import Any, Callable, Optional, TextIO

__all__ = ["current_sink", "install", "uninstall", "LineSink"]

#: A function taking (stream name, text) that the running attempt writes to.
LineSink = Callable[[str, str], None]

current_sink: contextvars.ContextVar[Optional[LineSink]] = contextvars.ContextVar(
    "ork_current_sink", default=None
)


class _Proxy:
    """A text stream that forwards to the current attempt's sink or the real stream."""

    def __init__(self, name: str, real: TextIO) -> None:
        self._name = name
        self._real = real

    def write(self, text: str) -> int:
        sink = current_sink.get()
        if sink is None:
            return self._real.write(text)
        sink(self._name, text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if current_sink.get() is None:
            self._real.flush()

    def __getattr__(self, name: str) -> Any:
        # fileno, isatty, encoding and the rest come from the real stream.
        return getattr(self._real, name)


_saved: list[tuple[TextIO, TextIO]] = []


def install() -> None:
    """Replaces ``sys.stdout`` and ``sys.stderr`` with routing proxies."""
    _saved.append((sys.stdout, sys.stderr))
    sys.stdout = _Proxy("stdout", sys.stdout)
    sys.stderr = _Proxy("stderr", sys.stderr)


def uninstall() -> None:
    """Puts back the streams :func:`install` replaced."""
    if _saved:
        sys.stdout, sys.stderr = _saved.pop()
