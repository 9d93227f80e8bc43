"""The task calling convention and launched-mode file contract, without a server."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pydantic
import pytest

import ork
from ork._context import parse_rfc3339
from ork._launched import EXIT_FAILED, EXIT_NON_RETRYABLE, run_attempt
from ork._task import TaskDefinition, normalize_numbers, to_json_data


class Point(pydantic.BaseModel):
    x: int
    y: int


def test_signatures_are_detected() -> None:
    def both(ctx, input):  # type: ignore[no-untyped-def]
        return [ctx.task_name, input]

    def only_input(input):  # type: ignore[no-untyped-def]
        return input

    def only_ctx(ctx: ork.Context) -> str:
        return ctx.task_name

    def nothing() -> int:
        return 7

    ctx = ork.Context(task_name="t")
    assert TaskDefinition(both).call(ctx, {"a": 1}) == ["t", {"a": 1}]
    assert TaskDefinition(only_input).call(ctx, {"a": 1}) == {"a": 1}
    assert TaskDefinition(only_ctx).call(ctx, {"a": 1}) == "t"
    assert TaskDefinition(nothing).call(ctx, None) == 7


def test_async_and_pydantic() -> None:
    async def shift(ctx: ork.Context, p: Point) -> Point:
        return Point(x=p.x + 1, y=p.y + 1)

    assert TaskDefinition(shift).call(ork.Context(), {"x": 1, "y": 2}) == {"x": 2, "y": 3}
    with pytest.raises(ork.NonRetryable, match="does not match Point"):
        TaskDefinition(shift).call(ork.Context(), {"x": "one"})


def test_decorator_registers_and_keeps_the_function_callable() -> None:
    @ork.task(name="renamed")
    def f(input: Any) -> Any:
        return input

    @ork.task
    def g(input: Any) -> Any:
        return input

    assert f(3) == 3
    assert "renamed" in ork.registered_tasks()
    assert ork.registered_tasks()["g"].fn is g
    assert ork.Worker(tasks=[f, g]).handlers == ["g", "renamed"]


def test_too_many_parameters_is_a_type_error() -> None:
    def three(a: Any, b: Any, c: Any) -> None: ...

    with pytest.raises(TypeError, match="takes 3 arguments"):
        ork.task(three)


def test_outputs_become_json_data() -> None:
    @dataclasses.dataclass
    class D:
        a: int

    assert to_json_data({"p": Point(x=1, y=2), "d": D(a=1), "t": (1, 2)}) == {
        "p": {"x": 1, "y": 2},
        "d": {"a": 1},
        "t": [1, 2],
    }
    with pytest.raises(ork.NonRetryable, match="not JSON"):
        to_json_data(object())


def test_numbers_are_normalized() -> None:
    assert normalize_numbers({"a": [1.0, 2.5, {"b": 3.0}]}) == {"a": [1, 2.5, {"b": 3}]}


def test_rfc3339() -> None:
    expected = datetime(2026, 11, 26, 12, 0, 1, 123456, tzinfo=timezone.utc)
    assert parse_rfc3339("2026-11-26T12:00:01.123456789+00:00") == expected
    assert parse_rfc3339("2026-11-26T13:00:01.123456Z") == expected.replace(hour=13)
    assert parse_rfc3339("") is None
    assert parse_rfc3339("yesterday") is None


def _env(tmp_path: Path, input: Any) -> dict[str, str]:
    (tmp_path / "in.json").write_text(json.dumps(input))
    return {
        "ORK_INPUT": str(tmp_path / "in.json"),
        "ORK_OUTPUT": str(tmp_path / "out.json"),
        "ORK_ERROR": str(tmp_path / "error.txt"),
        "ORK_TASK_NAME": "t",
        "ORK_ATTEMPT": "2",
        "ORK_PARALLEL_INDEX": "1",
        "ORK_PARALLEL_COUNT": "4",
    }


def test_run_attempt_writes_the_output(tmp_path: Path) -> None:
    def f(ctx: ork.Context, input: Any) -> Any:
        return {"got": input, "attempt": ctx.attempt, "index": ctx.parallel_index, "count": ctx.parallel_count}

    assert run_attempt(f, _env(tmp_path, {"a": 1}), []) == 0
    assert json.loads((tmp_path / "out.json").read_text()) == {"got": {"a": 1}, "attempt": 2, "index": 1, "count": 4}


def test_run_attempt_reports_failures(tmp_path: Path) -> None:
    def boom(input: Any) -> None:
        raise RuntimeError("boom")

    def refuse(input: Any) -> None:
        raise ork.NonRetryable("no")

    assert run_attempt(boom, _env(tmp_path, {}), []) == EXIT_FAILED
    error = (tmp_path / "error.txt").read_text()
    # The exception first, as the headline views show, then the traceback.
    assert error.startswith("RuntimeError: boom\n\nTraceback (most recent call last)"), error
    assert error.endswith("RuntimeError: boom"), error
    assert run_attempt(refuse, _env(tmp_path, {}), []) == EXIT_NON_RETRYABLE
    assert (tmp_path / "error.txt").read_text().endswith("NonRetryable: no")


def test_run_attempt_by_hand_prints_the_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_attempt(lambda input: input["n"] + 1, {}, ['{"n": 1}']) == 0
    assert capsys.readouterr().out.strip() == "2"


def test_metrics_are_checked_and_the_last_value_wins() -> None:
    metrics = ork.Metrics()
    metrics.record("rows", 1200)
    metrics.record("rows", 1300)
    metrics.record("score", 0.5)
    assert metrics.snapshot() == {"rows": 1300.0, "score": 0.5}
    for name, value in [("has space", 1), ("9lives", 1), ("x" * 65, 1), ("nan", float("nan")), ("b", True)]:
        with pytest.raises(ValueError):
            metrics.record(name, value)  # type: ignore[arg-type]


def test_run_attempt_hands_metrics_to_the_supervisor_even_on_failure(tmp_path: Path) -> None:
    def counts(ctx: ork.Context, input: Any) -> None:
        ctx.metrics.record("rows", 1200)
        ctx.metrics.record("score", 0.93)
        raise RuntimeError("after recording")

    env = {**_env(tmp_path, {}), "ORK_METRICS": str(tmp_path / "metrics.txt")}
    assert run_attempt(counts, env, []) == EXIT_FAILED
    assert (tmp_path / "metrics.txt").read_text() == "rows 1200.0\nscore 0.93\n"


def test_invalid_data_is_reported_as_its_message_alone() -> None:
    from ork._task import InvalidData, format_error

    with pytest.raises(InvalidData) as caught:
        to_json_data(object(), "t")
    text = format_error(caught.value)
    assert text == "the output of task t is not JSON: object is not JSON serializable", text
