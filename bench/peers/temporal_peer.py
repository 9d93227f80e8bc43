"""The peer side of `ork-bench --peers`: the same two workloads on a Temporal
dev server, with a Python worker (the `temporalio` SDK).

    python temporal_peer.py worker ADDRESS SLOTS     # serves until killed
    python temporal_peer.py run ADDRESS chain|fan N  # one run, prints JSON

`worker` prints "ready" on stderr once it polls. `run` starts one workflow
(a chain of N sequential no-op activities, or N no-op activities at once),
waits for its result and prints one JSON line: the workload, N and the
milliseconds from the start call to the result, on the client's clock (the
same clock the ork side uses: start call to success seen).

The worker is tuned the way Temporal advises for throughput: async
activities (no thread pool), the workflow sandbox off, several pollers, and
as many concurrent activities as the ork worker has slots.
"""

import asyncio
import json
import os
import sys
import time
import uuid
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

QUEUE = "bench"
TIMEOUT = timedelta(seconds=120)


@activity.defn
async def noop() -> None:
    return None


@workflow.defn
class Chain:
    @workflow.run
    async def run(self, n: int) -> int:
        for _ in range(n):
            await workflow.execute_activity(noop, start_to_close_timeout=TIMEOUT)
        return n


@workflow.defn
class FanOut:
    @workflow.run
    async def run(self, n: int) -> int:
        await asyncio.gather(
            *(workflow.execute_activity(noop, start_to_close_timeout=TIMEOUT) for _ in range(n))
        )
        return n


async def connect(address: str) -> Client:
    # The dev server takes a few seconds to accept calls after it listens.
    deadline = time.monotonic() + 60
    while True:
        try:
            return await Client.connect(address)
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def serve(address: str, slots: int) -> None:
    client = await connect(address)
    worker = Worker(
        client,
        task_queue=QUEUE,
        workflows=[Chain, FanOut],
        activities=[noop],
        workflow_runner=UnsandboxedWorkflowRunner(),
        max_concurrent_activities=slots,
        max_concurrent_workflow_tasks=slots,
        max_concurrent_activity_task_polls=8,
        max_concurrent_workflow_task_polls=8,
    )
    async with worker:
        print("ready", file=sys.stderr, flush=True)
        await asyncio.Event().wait()


async def run(address: str, workload: str, n: int) -> None:
    client = await connect(address)
    kind = {"chain": Chain.run, "fan": FanOut.run}[workload]
    t0 = time.perf_counter()
    result = await client.execute_workflow(kind, n, id=f"{workload}-{uuid.uuid4()}", task_queue=QUEUE)
    ms = (time.perf_counter() - t0) * 1000.0
    if result != n:
        raise SystemExit(f"{workload} returned {result}, expected {n}")
    print(json.dumps({"workload": workload, "n": n, "ms": ms}), flush=True)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "worker":
        asyncio.run(serve(sys.argv[2], int(sys.argv[3])))
    elif len(sys.argv) == 5 and sys.argv[1] == "run":
        asyncio.run(run(sys.argv[2], sys.argv[3], int(sys.argv[4])))
        # The SDK's native threads can abort the interpreter's shutdown after
        # the result is printed; the answer is out, so leave at once.
        sys.stdout.flush()
        os._exit(0)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
