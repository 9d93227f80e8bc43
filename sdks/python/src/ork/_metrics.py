"""Task metrics: named figures a task records for its attempt.

``ctx.metrics.record("rows", 1200)`` keeps a value under a name (recording
the name again replaces it); the figures travel with the attempt's report
and show in ``ork run status``, the run record, the mirror and the server's
``/metrics``.
"""

from __future__ import annotations

import math
import re
import threading
from typing import Dict, Mapping

__all__ = ["Metrics", "MAX_METRICS", "format_file"]

#: Most metrics one attempt may record.
MAX_METRICS = 64

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")


class Metrics:
    """The figures of one attempt. Safe to use from several threads."""

    def __init__(self) -> None:
        self._values: Dict[str, float] = {}
        self._lock = threading.Lock()

    def record(self, name: str, value: float) -> None:
        """Records ``value`` under ``name``.

        ``name`` is 1 to 64 letters, digits, ``_``, ``.`` or ``-``, starting
        with a letter or ``_``; ``value`` a finite number. Raises
        :class:`ValueError` otherwise, or past :data:`MAX_METRICS` names.
        """
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(
                f"metric name {name!r}: use 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or '_'"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"metric {name!r}: the value must be a finite number, got {value!r}")
        with self._lock:
            if name not in self._values and len(self._values) >= MAX_METRICS:
                raise ValueError(f"metric {name!r}: an attempt records at most {MAX_METRICS} metrics")
            self._values[name] = float(value)

    def snapshot(self) -> Dict[str, float]:
        """What was recorded so far, by name."""
        with self._lock:
            return dict(self._values)

    def __repr__(self) -> str:
        return f"Metrics({self.snapshot()!r})"


def format_file(values: Mapping[str, float]) -> str:
    """The ``ORK_METRICS`` file of ``values``: one ``name value`` line each."""
    return "".join(f"{name} {value!r}\n" for name, value in values.items())
