"""Launched mode: `.py` task files run by `ork-worker` under the subprocess executor."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

from orkserver import OrkServer, output_value, summarize, tasks_named


def _source(text: str) -> str:
    return textwrap.dedent(text).lstrip()


DOUBLE = _source(
    '''
    import ork

    @ork.task
    def double(ctx, input):
        ctx.log.info("doubling %s", input["n"])
        print("a line on stdout")
        return {
            "n": input["n"] * 2,
            "who": input["who"],
            "task": ctx.task_name,
            "workflow": ctx.workflow,
            "run_id": ctx.run_id,
            "attempt": ctx.attempt,
            "parallel_index": ctx.parallel_index,
            "has_deadline": ctx.deadline is not None,
        }

    if __name__ == "__main__":
        ork.run(double)
    '''
)

ASYNC_PYDANTIC = _source(
    '''
    import asyncio
    import pydantic
    import ork

    class Numbers(pydantic.BaseModel):
        values: list[int]

    class Total(pydantic.BaseModel):
        total: int

    async def add(input: Numbers) -> Total:
        await asyncio.sleep(0.01)
        return Total(total=sum(input.values))

    if __name__ == "__main__":
        ork.run(add)
    '''
)


def test_launched_task_gets_input_and_returns_output(server: OrkServer) -> None:
    server.deploy(
        _source(
            """
            name: py-launched-ok
            tasks:
              - name: double
                file: double.py
                input:
                  n: 21
                  who: "{{ run.input.who }}"
              - name: add
                file: add.py
                depends_on: [double]
                input:
                  values: [1, 2, "{{ tasks.double.output.n }}"]
            """
        ),
        {"double.py": DOUBLE, "add.py": ASYNC_PYDANTIC},
    )
    run_id = server.start("py-launched-ok", {"who": "tests"})
    run = server.wait(run_id)
    assert run["status"] == "success", summarize(run)
    [double] = tasks_named(run, "double")
    assert output_value(double) == {
        "n": 42,
        "who": "tests",
        "task": "double",
        "workflow": "py-launched-ok",
        "run_id": run_id,
        "attempt": 1,
        "parallel_index": None,
        "has_deadline": True,
    }
    [add] = tasks_named(run, "add")
    assert output_value(add) == {"total": 45}
    lines = [line["line"] for line in server.logs(run_id, "double")]
    assert any("INFO doubling 21" in line for line in lines), lines
    assert "a line on stdout" in lines


RAISES = _source(
    '''
    import ork

    def parse_amount(text):
        return int(text)

    @ork.task
    def charge(ctx, input):
        return {"amount": parse_amount(input["amount"])}

    if __name__ == "__main__":
        ork.run(charge)
    '''
)


def test_raising_task_reports_its_traceback_and_is_retried(server: OrkServer) -> None:
    server.deploy(
        _source(
            """
            name: py-launched-raises
            tasks:
              - name: charge
                file: charge.py
                retries: 1
                retry_delay_seconds: 0
                input:
                  amount: "twelve"
            """
        ),
        {"charge.py": RAISES},
    )
    run = server.wait(server.start("py-launched-raises"))
    assert run["status"] == "failed", summarize(run)
    [charge] = tasks_named(run, "charge")
    error = charge["error"]
    assert "Traceback (most recent call last)" in error, error
    assert "in parse_amount" in error, error
    assert "ValueError: invalid literal for int() with base 10: 'twelve'" in error, error
    assert charge["attempt"] == 2, summarize(run)
    assert len(charge["attempts"]) == 2


NON_RETRYABLE = _source(
    '''
    import ork

    @ork.task
    def refuse(input):
        raise ork.NonRetryable("account 42 is closed")

    if __name__ == "__main__":
        ork.run(refuse)
    '''
)


def test_non_retryable_is_not_retried(server: OrkServer) -> None:
    server.deploy(
        _source(
            """
            name: py-launched-non-retryable
            tasks:
              - name: refuse
                file: refuse.py
                retries: 3
                retry_delay_seconds: 0
            """
        ),
        {"refuse.py": NON_RETRYABLE},
    )
    run = server.wait(server.start("py-launched-non-retryable"))
    assert run["status"] == "failed", summarize(run)
    [refuse] = tasks_named(run, "refuse")
    assert "NonRetryable: account 42 is closed" in refuse["error"], refuse["error"]
    assert refuse["attempt"] == 1, summarize(run)
    assert len(refuse["attempts"]) == 1


def test_invalid_pydantic_input_is_non_retryable(server: OrkServer) -> None:
    server.deploy(
        _source(
            """
            name: py-launched-bad-input
            tasks:
              - name: add
                file: add.py
                retries: 3
                retry_delay_seconds: 0
                input:
                  values: ["not a number"]
            """
        ),
        {"add.py": ASYNC_PYDANTIC},
    )
    run = server.wait(server.start("py-launched-bad-input"))
    assert run["status"] == "failed", summarize(run)
    [add] = tasks_named(run, "add")
    assert "does not match Numbers" in add["error"], add["error"]
    # One clear message: no traceback, and no second, chained one.
    assert add["error"].startswith("the input of task add does not match Numbers: "), add["error"]
    assert "Traceback" not in add["error"], add["error"]
    assert add["attempt"] == 1, summarize(run)


FAN_OUT = _source(
    '''
    import ork

    @ork.task
    def square(ctx, input):
        i = ctx.parallel_index
        return {"index": i, "count": ctx.parallel_count, "square": input["items"][i] ** 2}

    if __name__ == "__main__":
        ork.run(square)
    '''
)


def test_fan_out_instances_see_their_parallel_index(server: OrkServer) -> None:
    server.deploy(
        _source(
            """
            name: py-launched-fan-out
            tasks:
              - name: square
                file: square.py
                parallel: 3
                input:
                  items: [3, 4, 5]
            """
        ),
        {"square.py": FAN_OUT},
    )
    run = server.wait(server.start("py-launched-fan-out"))
    assert run["status"] == "success", summarize(run)
    outputs = [output_value(t) for t in tasks_named(run, "square")]
    assert outputs == [
        {"index": 0, "count": 3, "square": 9},
        {"index": 1, "count": 3, "square": 16},
        {"index": 2, "count": 3, "square": 25},
    ]


WAITS_FOR_SIGTERM = _source(
    '''
    import pathlib
    import ork

    @ork.task
    def wait(ctx, input):
        marker = pathlib.Path(input["marker"])
        marker.write_text("started")
        if ctx.wait_cancelled(60):
            marker.write_text("cancelled")
        return {}

    if __name__ == "__main__":
        ork.run(wait)
    '''
)


def test_sigterm_sets_ctx_cancelled(server: OrkServer, tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    server.deploy(
        _source(
            """
            name: py-launched-cancel
            tasks:
              - name: wait
                file: wait.py
                input:
                  marker: "{{ run.input.marker }}"
            """
        ),
        {"wait.py": WAITS_FOR_SIGTERM},
    )
    run_id = server.start("py-launched-cancel", {"marker": str(marker)})
    give_up = time.monotonic() + 30
    while not (marker.exists() and marker.read_text() == "started"):
        assert time.monotonic() < give_up, "the task did not start"
        time.sleep(0.05)
    server.cancel(run_id)
    give_up = time.monotonic() + 15
    while marker.read_text() != "cancelled":
        assert time.monotonic() < give_up, "SIGTERM did not reach ctx.cancelled"
        time.sleep(0.05)
    assert server.wait(run_id)["status"] == "cancelled"
