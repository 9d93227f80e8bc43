"""ork: write workflow tasks in Python.

Two ways to run a task function:

- **Launched**: a ``.py`` task file in a workflow ends with
  ``if __name__ == "__main__": ork.run(my_task)``; ork starts one process per
  attempt and the ``ork-worker`` supervisor owns heartbeats, logs, timeouts.
- **Pool**: ``ork.Worker(tasks=[...]).run()`` serves functions by name to tasks
  declared with ``executor: workers`` and ``handler: NAME``, without a process
  per attempt.

Either way a task is ``def f(ctx, input)`` (or ``def f(input)``), sync or
``async``, returns its output, and fails by raising; raise
:class:`NonRetryable` when a retry cannot help.
"""

from ._context import Context
from ._errors import NonRetryable
from ._launched import run
from ._metrics import Metrics
from ._task import TaskDefinition, registered_tasks, task
from ._worker import Worker, WorkerError

__version__ = "0.1.0"

__all__ = [
    "Context",
    "Metrics",
    "NonRetryable",
    "TaskDefinition",
    "Worker",
    "WorkerError",
    "registered_tasks",
    "run",
    "task",
    "__version__",
]
