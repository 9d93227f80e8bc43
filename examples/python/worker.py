"""Pool worker: serves `count_words` and `total` to tasks with `executor: workers`.

    ORK_SERVER=http://127.0.0.1:7400 python3 examples/python/worker.py

Stop it with Ctrl-C (or SIGTERM): it finishes its running tasks first.
"""

import asyncio
import logging
from collections import Counter
from typing import Dict, List

import ork


@ork.task
def count_words(ctx: ork.Context, input: dict) -> Dict[str, int]:
    """Counts the words of one line (one fan-out instance per line)."""
    words = input["line"].lower().split()
    ctx.log.info("instance %s of %s: %d words", ctx.parallel_index, ctx.parallel_count, len(words))
    return dict(Counter(words))


@ork.task(name="total")
async def total(input: dict) -> dict:
    """Adds up every instance's counts; async functions work the same way."""
    counts: List[Dict[str, int]] = input["counts"]
    overall: Counter = Counter()
    for c in counts:
        overall.update(c)
        await asyncio.sleep(0)
    return {"words": sum(overall.values()), "top": overall.most_common(3)}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ork.Worker(tasks=[count_words, total], slots=4).run()
