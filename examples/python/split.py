"""Launched task: splits the run's text into non-empty lines."""

import ork


@ork.task
def split(ctx: ork.Context, input: dict) -> dict:
    text = input.get("text") or ""
    if not isinstance(text, str):
        raise ork.NonRetryable(f"`text` must be a string, got {type(text).__name__}")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    ctx.log.info("split %d characters into %d lines", len(text), len(lines))
    return {"lines": lines}


if __name__ == "__main__":
    ork.run(split)
