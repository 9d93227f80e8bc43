"""Errors that task functions raise to steer how ork treats a failure."""

from __future__ import annotations

__all__ = ["NonRetryable"]


class NonRetryable(Exception):
    """Fails the task attempt and tells ork not to retry it.

    Raise it when retrying cannot help: the input is invalid, a resource is
    permanently gone, a request was refused for good. Any other exception fails
    the attempt too, but leaves the task's ``retries`` budget in charge.

    Example::

        @ork.task
        def charge(ctx, input):
            if input["amount"] <= 0:
                raise ork.NonRetryable(f"amount must be positive, got {input['amount']}")
    """
