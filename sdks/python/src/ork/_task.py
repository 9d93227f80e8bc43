"""The ``@task`` decorator and how a task function is called.

A task function takes ``(ctx, input)``, ``(input)``, ``(ctx)`` or nothing,
may be ``async``, and returns its output. The input arrives as JSON (a dict,
usually) and is validated into a pydantic model when the input parameter is
annotated with one; the return value is converted back to JSON.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import math
import os
import traceback
import typing
from typing import Any, Callable, Dict, Optional, TypeVar, Union, overload

from ._context import Context
from ._errors import NonRetryable

__all__ = ["TaskDefinition", "task", "registered_tasks", "InvalidData"]


class InvalidData(NonRetryable):
    """An input that does not validate, or an output that is not JSON.

    Reported as its message alone: the mistake is in the data, and a
    traceback through the SDK's own frames would only hide the message.
    """

F = TypeVar("F", bound=Callable[..., Any])

_ATTRIBUTE = "__ork_task__"
_REGISTRY: Dict[str, "TaskDefinition"] = {}


class TaskDefinition:
    """A task function with the name it is served under and how to call it."""

    def __init__(self, fn: Callable[..., Any], name: Optional[str] = None) -> None:
        """Inspects ``fn``'s signature; raises :class:`TypeError` when ork cannot call it."""
        if not callable(fn):
            raise TypeError(f"ork: a task must be a function, got {fn!r}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", None) or ""
        if not self.name:
            raise TypeError(f"ork: {fn!r} has no __name__; pass @ork.task(name=...)")
        self.is_async = inspect.iscoroutinefunction(fn)
        self.takes_ctx, self.takes_input, self.input_model = _inspect_signature(fn)

    def call(self, ctx: Context, raw_input: Any) -> Any:
        """Runs the function on ``raw_input`` (JSON data) and returns JSON data.

        Raises what the function raises; an input that fails pydantic
        validation or an output that is not JSON raises :class:`NonRetryable`.
        """
        if raw_input is None:
            # A task whose YAML gives no input gets an empty object, in both modes.
            raw_input = {}
        args: list[Any] = []
        if self.takes_ctx:
            args.append(ctx)
        if self.takes_input:
            args.append(self._convert_input(raw_input))
        if self.is_async:
            result = asyncio.run(self.fn(*args))
        else:
            result = self.fn(*args)
            if inspect.isawaitable(result):
                result = asyncio.run(_await(result))
        return to_json_data(result, self.name)

    def _convert_input(self, raw_input: Any) -> Any:
        model = self.input_model
        if model is None:
            return raw_input
        try:
            return model.model_validate(raw_input)
        except Exception as e:  # pydantic.ValidationError, without importing pydantic
            # Reported as this one message: pydantic's own text names each
            # field, and a traceback through the SDK would only bury it.
            raise InvalidData(
                f"the input of task {self.name} does not match {model.__name__}: {e}"
            ) from None

    def __repr__(self) -> str:
        return f"TaskDefinition(name={self.name!r}, fn={self.fn!r})"


async def _await(awaitable: Any) -> Any:
    return await awaitable


@overload
def task(fn: F) -> F: ...


@overload
def task(*, name: Optional[str] = None) -> Callable[[F], F]: ...


def task(fn: Optional[F] = None, *, name: Optional[str] = None) -> Union[F, Callable[[F], F]]:
    """Marks a function as an ork task, under its own name or ``name``.

    The function is returned unchanged, so calling it directly (in a test, say)
    still works. Use as ``@ork.task`` or ``@ork.task(name="resize_image")``; the
    name is the ``handler`` a workflow's YAML refers to in pool mode.
    """

    def mark(f: F) -> F:
        definition = TaskDefinition(f, name)
        setattr(f, _ATTRIBUTE, definition)
        _REGISTRY[definition.name] = definition
        return f

    if fn is not None:
        return mark(fn)
    return mark


def registered_tasks() -> Dict[str, TaskDefinition]:
    """Every task defined with ``@ork.task`` so far, by name."""
    return dict(_REGISTRY)


def definition_of(fn: Callable[..., Any]) -> TaskDefinition:
    """The definition ``@ork.task`` attached to ``fn``, or a new one by its name."""
    found = getattr(fn, _ATTRIBUTE, None)
    if isinstance(found, TaskDefinition):
        return found
    return TaskDefinition(fn)


def _inspect_signature(fn: Callable[..., Any]) -> tuple[bool, bool, Optional[Any]]:
    """Returns (takes ctx, takes input, pydantic model of the input or None)."""
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: fall back to names
        hints = {}
    if len(params) > 2:
        raise TypeError(
            f"ork: task {getattr(fn, '__name__', fn)!r} takes {len(params)} arguments; "
            "a task takes (ctx, input), (input), (ctx) or nothing"
        )
    if len(params) == 2:
        return True, True, _model_of(hints.get(params[1].name))
    if len(params) == 1:
        hint = hints.get(params[0].name)
        if hint is Context or (hint is None and params[0].name in ("ctx", "context")):
            return True, False, None
        return False, True, _model_of(hint)
    return False, False, None


def _model_of(hint: Any) -> Optional[Any]:
    """``hint`` when it is a pydantic model class (anything with ``model_validate``)."""
    if inspect.isclass(hint) and callable(getattr(hint, "model_validate", None)):
        return hint
    return None


def to_json_data(value: Any, task_name: str = "task") -> Any:
    """Converts a task's return value into plain JSON data.

    Pydantic models and dataclasses become dicts; tuples and sets become
    lists. Anything else that JSON cannot hold raises :class:`NonRetryable`,
    since retrying the same code would fail the same way.
    """
    try:
        return json.loads(json.dumps(value, default=_default, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise InvalidData(f"the output of task {task_name} is not JSON: {e}") from None


def _default(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def normalize_numbers(value: Any) -> Any:
    """Turns integral floats back into ints, recursively.

    Protobuf's ``Value`` holds every number as a double, so ``3`` sent by the
    server arrives as ``3.0`` in pool mode; launched mode reads JSON, where it
    stays ``3``. Normalising keeps the two modes alike.
    """
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: normalize_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize_numbers(v) for v in value]
    return value


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def format_error(exc: BaseException) -> str:
    """The error text reported for an exception: what happened, then how.

    The first line is the exception itself (``ValueError: bad input``), the
    headline that ``ork run status`` and any other view show; the full
    traceback follows after a blank line. The SDK's own frames at the top of
    the stack (the code that called the task function) are left out, so the
    traceback starts in the user's code. :class:`InvalidData` is its message
    alone.
    """
    if isinstance(exc, InvalidData):
        return str(exc)
    headline = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None and _is_sdk_frame(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    body = "".join(traceback.format_exception(type(exc), exc, tb)).rstrip("\n")
    return f"{headline}\n\n{body}"


_ASYNCIO_DIR = os.path.dirname(os.path.abspath(asyncio.__file__))


def _is_sdk_frame(filename: str) -> bool:
    """Whether a frame belongs to the machinery that called the task: ork or asyncio."""
    directory = os.path.dirname(os.path.abspath(filename))
    return directory in (_PACKAGE_DIR, _ASYNCIO_DIR)
