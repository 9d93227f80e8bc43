"""A pool worker process for the tests: `python pool_worker.py SERVER NAME SLOTS EVENTS_FILE`.

Every handler appends JSON events (start, end, cancelled) to EVENTS_FILE, one
line per `os.write` on an O_APPEND descriptor so that lines from the threads of
several worker processes never interleave.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from typing import Any

import ork

_events_fd = -1
_worker_name = ""


def record(ctx: ork.Context, event: str, **extra: Any) -> None:
    line = {
        "event": event,
        "worker": _worker_name,
        "time": time.time(),
        "task_run_id": ctx.task_run_id,
        "attempt": ctx.attempt,
        "index": ctx.parallel_index,
        **extra,
    }
    os.write(_events_fd, (json.dumps(line) + "\n").encode())


@ork.task
def echo(ctx: ork.Context, input: Any) -> Any:
    ctx.log.info("echo got %s", json.dumps(input, sort_keys=True))
    print("printed by echo")
    return {"got": input, "worker": _worker_name}


@ork.task(name="shout")
async def shout_async(input: Any) -> str:
    await asyncio.sleep(0.01)
    return str(input["text"]).upper()


@ork.task
def slow(ctx: ork.Context, input: Any) -> Any:
    record(ctx, "start")
    cancelled = ctx.wait_cancelled(float(input.get("seconds", 1)))
    record(ctx, "cancelled" if cancelled else "end")
    return {"index": ctx.parallel_index, "worker": _worker_name}


@ork.task
def wait_for_cancel(ctx: ork.Context) -> None:
    record(ctx, "start")
    give_up = time.monotonic() + 60
    while not ctx.cancelled and time.monotonic() < give_up:
        time.sleep(0.05)
    record(ctx, "cancelled" if ctx.cancelled else "gave up")


@ork.task
def explode(input: Any) -> None:
    if input.get("permanent"):
        raise ork.NonRetryable("permanent trouble")
    raise KeyError("missing-key")


def main() -> None:
    global _events_fd, _worker_name
    server, _worker_name, slots, events = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    _events_fd = os.open(events, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    worker = ork.Worker(
        tasks=[echo, shout_async, slow, wait_for_cancel, explode], server=server, slots=slots, name=_worker_name
    )
    worker.run()
    print(f"worker {_worker_name} stopped", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
