"""A pool worker for the browser tests: serves `ui_square`."""

import ork


@ork.task
def ui_square(input: dict) -> dict:
    return {"square": input["n"] * input["n"]}


if __name__ == "__main__":
    ork.Worker(tasks=[ui_square], slots=2, name="ui-test-worker").run()
