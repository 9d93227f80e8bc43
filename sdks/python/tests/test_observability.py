"""Traces and task metrics across languages, against a real OpenTelemetry
Collector (``scripts/otelcol.sh``, which ``scripts/test-python.sh`` starts).

One run: a Python pool task and a Go pool task that open spans of their own,
a launched Python task and a shell task, each recording metrics. The run must
be one trace in the collector, with the run's span as its root, one span per
attempt under it, each SDK's task span under its attempt and the handler's
own span under that; and every task's metrics must show in
``ork run status -o json``, in the mirror and in ``/metrics``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from orkserver import OrkServer, ork_binary, summarize

REPO = Path(__file__).resolve().parents[3]

WORKFLOW = textwrap.dedent(
    """
    name: traced
    tasks:
      - name: py
        executor: workers
        handler: py_traced
        input: { text: "spans across languages" }
      - name: go
        executor: workers
        handler: go_traced
        depends_on: [py]
        input: { text: "{{ tasks.py.output.text }}" }
      - name: launched
        file: launched.py
        depends_on: [go]
      - name: shell
        file: shell.sh
        depends_on: [launched]
    """
).lstrip()

LAUNCHED = textwrap.dedent(
    """
    import ork

    @ork.task
    def launched(ctx, input):
        ctx.metrics.record("score", 0.93)
        return {"ok": True}

    if __name__ == "__main__":
        ork.run(launched)
    """
).lstrip()

SHELL = 'echo "rows 1200" >> "$ORK_METRICS"\necho "bytes 4096" >> "$ORK_METRICS"\n'


def collector() -> tuple[str, Path]:
    endpoint = os.environ.get("ORK_TEST_OTLP_ENDPOINT")
    spans = os.environ.get("ORK_TEST_OTLP_FILE")
    if not endpoint or not spans:
        pytest.fail("run under scripts/otelcol.sh (scripts/test-python.sh does) so a collector is up")
    return endpoint, Path(spans)


@pytest.fixture(scope="module")
def traced_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrkServer]:
    endpoint, _ = collector()
    srv = OrkServer(tmp_path_factory.mktemp("ork-traced"), ["--otlp-endpoint", endpoint])
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def workers(traced_server: OrkServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    endpoint, _ = collector()
    go = shutil.which("go")
    if go is None:
        pytest.fail("the Go toolchain is needed for the trace test")
    binary = tmp_path_factory.mktemp("go-traced") / "worker"
    subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=REPO / "tests" / "go-traced-worker",
        check=True,
        env={**os.environ, "GOFLAGS": "-mod=mod"},
    )
    procs = [
        subprocess.Popen([str(binary), "-server", traced_server.url, "-otlp", endpoint]),
        subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / "traced_worker.py"), traced_server.url, endpoint]
        ),
    ]
    try:
        yield
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def spans_of(path: Path, trace_id: str) -> List[Dict[str, Any]]:
    """Every span of one trace the collector wrote, with its service name."""
    found = []
    for line in path.read_text().splitlines():
        for rs in json.loads(line).get("resourceSpans", []):
            service = next(
                (a["value"].get("stringValue") for a in rs.get("resource", {}).get("attributes", [])
                 if a["key"] == "service.name"),
                "",
            )
            for ss in rs.get("scopeSpans", []):
                for span in ss.get("spans", []):
                    if span["traceId"] == trace_id:
                        found.append({**span, "service": service})
    return found


def metrics_of(run: Dict[str, Any]) -> Dict[str, Dict[str, float]]:
    """The metrics of each task's latest attempt (none yet: a mirror that has
    not caught up may show a task before its attempts)."""
    return {t["name"]: (t.get("attempts") or [{}])[-1].get("metrics", {}) for t in run["tasks"]}


EXPECTED_METRICS = {
    "py": {"words": 3.0},
    "go": {"chars": 22.0},
    "launched": {"score": 0.93},
    "shell": {"rows": 1200.0, "bytes": 4096.0},
}


def test_one_trace_and_every_tasks_metrics(traced_server: OrkServer, workers: None) -> None:
    _, span_file = collector()
    traced_server.deploy(WORKFLOW, {"launched.py": LAUNCHED, "shell.sh": SHELL})
    run_id = traced_server.start("traced", {})
    run = traced_server.wait(run_id)
    assert run["status"] == "success", summarize(run)

    # Task metrics: in the run record as `ork run status -o json` prints it...
    ork = str(ork_binary())
    shown = json.loads(subprocess.run(
        [ork, "--server", traced_server.url, "run", "status", run_id, "-o", "json"],
        capture_output=True, text=True, check=True,
    ).stdout)
    assert metrics_of(shown) == EXPECTED_METRICS
    # ...in the mirror, read from the bucket alone (once it caught up)...
    objects = f"file://{traced_server.data_dir / 'objects'}"
    deadline = time.monotonic() + 60
    while True:
        mirrored = subprocess.run(
            [ork, "run", "status", run_id, "--from-objects", objects, "-o", "json"],
            capture_output=True, text=True,
        )
        if mirrored.returncode == 0 and metrics_of(json.loads(mirrored.stdout)) == EXPECTED_METRICS:
            break
        assert time.monotonic() < deadline, mirrored.stdout + mirrored.stderr
        time.sleep(0.2)
    # ...and in /metrics, as histograms per workflow, task and name.
    scrape = urllib.request.urlopen(f"{traced_server.url}/metrics", timeout=10).read().decode()
    for task, values in EXPECTED_METRICS.items():
        for name, value in values.items():
            labels = f'workflow="traced",task="{task}",name="{name}"'
            assert f"ork_task_metric_count{{{labels}}} 1\n" in scrape, scrape
            assert f"ork_task_metric_sum{{{labels}}} {value}\n" in scrape, scrape

    # One trace, whose id is the run id.
    trace_id = run_id.replace("-", "")
    by_name: Dict[str, Dict[str, Any]] = {}
    deadline = time.monotonic() + 60
    wanted = {"run traced", "attempt py", "attempt go", "attempt launched", "attempt shell",
              "task py_traced", "task go_traced", "py_child", "go_child"}
    while True:
        by_name = {s["name"]: s for s in spans_of(span_file, trace_id)}
        if wanted <= set(by_name):
            break
        assert time.monotonic() < deadline, f"spans so far: {sorted(by_name)}"
        time.sleep(0.2)

    root = by_name["run traced"]
    assert root.get("parentSpanId", "") == "", root
    for task in ("py", "go", "launched", "shell"):
        assert by_name[f"attempt {task}"]["parentSpanId"] == root["spanId"], task
    assert by_name["task py_traced"]["parentSpanId"] == by_name["attempt py"]["spanId"]
    assert by_name["task go_traced"]["parentSpanId"] == by_name["attempt go"]["spanId"]
    assert by_name["py_child"]["parentSpanId"] == by_name["task py_traced"]["spanId"]
    assert by_name["go_child"]["parentSpanId"] == by_name["task go_traced"]["spanId"]
    assert by_name["task py_traced"]["service"] == "py-traced-worker"
    assert by_name["task go_traced"]["service"] == "go-traced-worker"
    assert root["service"] == "ork"
