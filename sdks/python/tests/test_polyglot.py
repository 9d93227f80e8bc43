"""One workflow across languages: a shell script, Python functions (launched)
and Go functions (a Go pool worker), passing outputs along and fanning out
over a Python task's list."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import textwrap
from pathlib import Path
from typing import Iterator

import pytest

from orkserver import OrkServer, output_value, summarize, tasks_named

REPO = Path(__file__).resolve().parents[3]

WORKFLOW = textwrap.dedent(
    """
    name: polyglot
    tasks:
      - name: greet
        file: greet.sh
        input: { phrase: "{{ run.input.phrase }}" }
      - name: split
        file: split.py
        depends_on: [greet]
        input: { text: "{{ tasks.greet.output.text }}" }
      - name: shout
        executor: workers
        handler: go_upper
        depends_on: [split]
        parallel: { for_each: split.words }
        input: { text: "{{ item }}" }
      - name: total
        executor: workers
        handler: go_sum
        depends_on: [split]
        input: { values: "{{ tasks.split.output.lengths }}" }
      - name: report
        file: report.py
        depends_on: [shout, total]
        input:
          shouted: "{{ tasks.shout.outputs }}"
          letters: "{{ tasks.total.output.sum }}"
    """
).lstrip()

GREET = "#!/bin/bash\nphrase=$(python3 -c 'import json,os; print(json.load(open(os.environ[\"ORK_INPUT\"]))[\"phrase\"])')\necho \"{\\\"text\\\": \\\"$phrase\\\"}\" > \"$ORK_OUTPUT\"\n"

SPLIT = textwrap.dedent(
    """
    import ork

    @ork.task
    def split(ctx, input):
        words = input["text"].split()
        ctx.log.info("split into %d words", len(words))
        return {"words": words, "lengths": [len(w) for w in words]}

    if __name__ == "__main__":
        ork.run(split)
    """
).lstrip()

REPORT = textwrap.dedent(
    """
    import ork

    @ork.task
    def report(input):
        return {"shouted": " ".join(o["text"] for o in input["shouted"]), "letters": input["letters"]}

    if __name__ == "__main__":
        ork.run(report)
    """
).lstrip()

BROKEN = textwrap.dedent(
    """
    import ork

    def parse(row):
        return int(row)

    @ork.task
    def broken(input):
        return parse("not a number")

    if __name__ == "__main__":
        ork.run(broken)
    """
).lstrip()


@pytest.fixture(scope="module")
def go_worker(server: OrkServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen[bytes]]:
    """The Go SDK's example pool worker (go_sum, go_upper), built from source."""
    go = shutil.which("go")
    if go is None:
        pytest.fail("the Go toolchain is needed for the polyglot test")
    out = tmp_path_factory.mktemp("go") / "worker"
    subprocess.run(
        [go, "build", "-o", str(out), "./examples/worker"], cwd=REPO / "sdks" / "go", check=True
    )
    proc = subprocess.Popen(
        [str(out), "-server", server.url, "-slots", "4", "-name", "polyglot-go"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    yield proc
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_shell_python_and_go_tasks_pass_outputs_and_fan_out(
    server: OrkServer, go_worker: subprocess.Popen[bytes]
) -> None:
    server.deploy(
        WORKFLOW, {"greet.sh": GREET, "split.py": SPLIT, "report.py": REPORT}
    )
    run = server.wait(server.start("polyglot", {"phrase": "tasks in any language"}))
    assert run["status"] == "success", summarize(run)
    shouted = [output_value(t)["text"] for t in tasks_named(run, "shout")]
    assert shouted == ["TASKS", "IN", "ANY", "LANGUAGE"]
    assert output_value(tasks_named(run, "total")[0]) == {"sum": 18, "count": 4}
    assert output_value(tasks_named(run, "report")[0]) == {"shouted": "TASKS IN ANY LANGUAGE", "letters": 18}


def test_a_python_exception_shows_its_traceback_in_run_status(server: OrkServer) -> None:
    yaml = "name: broken\ntasks:\n  - name: broken\n    file: broken.py\n"
    server.deploy(yaml, {"broken.py": BROKEN})
    run = server.wait(server.start("broken", {}))
    assert run["status"] == "failed", summarize(run)
    error = tasks_named(run, "broken")[0]["error"]
    assert "Traceback" in error, error
    assert "in parse" in error, error
    assert "ValueError: invalid literal for int() with base 10: 'not a number'" in error, error
    # And the CLI shows it too, as a user would see it.
    ork = os.environ.get("ORK_BIN") or str(REPO / "target" / "debug" / "ork")
    shown = subprocess.run(
        [ork, "--server", server.url, "run", "status", run["id"], "-o", "json"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "ValueError" in shown
