"""Pool mode: `ork.Worker` processes attached over the Session stream."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

from orkserver import OrkServer, output_value, summarize, tasks_named

WORKER_SCRIPT = Path(__file__).with_name("pool_worker.py")


class WorkerProcess:
    """One `pool_worker.py` process, with its stderr kept for diagnosis."""

    def __init__(
        self, server: OrkServer, name: str, slots: int, events: Path, env: Optional[Dict[str, str]] = None
    ) -> None:
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER_SCRIPT), server.url, name, str(slots), str(events)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stderr: List[str] = []
        self._attached = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._attached.wait(30):
            self.kill()
            raise AssertionError(f"worker {name} did not attach in 30s:\n" + "\n".join(self.stderr))

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line.rstrip("\n"))
            if " attached to " in line:
                self._attached.set()

    def terminate(self, timeout: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def events(tmp_path: Path) -> Path:
    return tmp_path / "events.jsonl"


@pytest.fixture
def start_worker(server: OrkServer, events: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Starts worker processes; each is stopped (drained, then killed) after the test."""
    started: List[WorkerProcess] = []

    def start(name: str, slots: int = 4) -> WorkerProcess:
        worker = WorkerProcess(server, name, slots, events)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.process.poll() is None:
            try:
                worker.terminate(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()


def read_events(path: Path) -> List[Dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    give_up = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def _yaml(text: str) -> str:
    return textwrap.dedent(text).lstrip()


def test_sync_and_async_handlers(server: OrkServer, start_worker: Callable[..., WorkerProcess]) -> None:
    start_worker("w-basic")
    server.deploy(
        _yaml(
            """
            name: py-pool-basic
            tasks:
              - name: echo
                executor: workers
                handler: echo
                input:
                  text: "{{ run.input.text }}"
                  n: 3
              - name: shout
                executor: workers
                handler: shout
                depends_on: [echo]
                input:
                  text: "{{ tasks.echo.output.got.text }}"
            """
        )
    )
    run_id = server.start("py-pool-basic", {"text": "hello"})
    run = server.wait(run_id, timeout=60)
    assert run["status"] == "success", summarize(run)
    [echo] = tasks_named(run, "echo")
    assert output_value(echo) == {"got": {"text": "hello", "n": 3}, "worker": "w-basic"}
    [shout] = tasks_named(run, "shout")
    assert output_value(shout) == "HELLO"
    lines = [(line["stream"], line["line"]) for line in server.logs(run_id, "echo")]
    assert ("stderr", 'INFO echo got {"n": 3, "text": "hello"}') in lines, lines
    assert ("stdout", "printed by echo") in lines, lines


def test_failures_carry_the_traceback(server: OrkServer, start_worker: Callable[..., WorkerProcess]) -> None:
    start_worker("w-fail")
    server.deploy(
        _yaml(
            """
            name: py-pool-fail
            tasks:
              - name: flaky
                executor: workers
                handler: explode
                retries: 1
                retry_delay_seconds: 0
              - name: permanent
                executor: workers
                handler: explode
                retries: 3
                retry_delay_seconds: 0
                input:
                  permanent: true
            """
        )
    )
    run = server.wait(server.start("py-pool-fail"), timeout=60)
    assert run["status"] == "failed", summarize(run)
    [flaky] = tasks_named(run, "flaky")
    assert "Traceback (most recent call last)" in flaky["error"], flaky["error"]
    assert "KeyError: 'missing-key'" in flaky["error"], flaky["error"]
    assert flaky["attempt"] == 2, summarize(run)
    [permanent] = tasks_named(run, "permanent")
    assert "NonRetryable: permanent trouble" in permanent["error"], permanent["error"]
    assert permanent["attempt"] == 1, summarize(run)


def test_cancel_reaches_ctx_cancelled(
    server: OrkServer, start_worker: Callable[..., WorkerProcess], events: Path
) -> None:
    start_worker("w-cancel")
    server.deploy(
        _yaml(
            """
            name: py-pool-cancel
            tasks:
              - name: wait
                executor: workers
                handler: wait_for_cancel
            """
        )
    )
    run_id = server.start("py-pool-cancel")
    wait_for(lambda: any(e["event"] == "start" for e in read_events(events)), 30, "the task to start")
    server.cancel(run_id)
    wait_for(lambda: any(e["event"] == "cancelled" for e in read_events(events)), 15, "ctx.cancelled")
    assert server.wait(run_id, timeout=30)["status"] == "cancelled"


def test_stop_drains_running_tasks(
    server: OrkServer, start_worker: Callable[..., WorkerProcess], events: Path
) -> None:
    worker = start_worker("w-drain")
    server.deploy(
        _yaml(
            """
            name: py-pool-drain
            tasks:
              - name: slow
                executor: workers
                handler: slow
                parallel: 2
                input:
                  seconds: 2
            """
        )
    )
    run_id = server.start("py-pool-drain")
    wait_for(lambda: sum(e["event"] == "start" for e in read_events(events)) == 2, 30, "both tasks to start")
    stopped_at = time.monotonic()
    assert worker.terminate(timeout=30) == 0, "\n".join(worker.stderr)
    assert time.monotonic() - stopped_at >= 1, "the worker exited before its tasks finished"
    ends = [e for e in read_events(events) if e["event"] == "end"]
    assert len(ends) == 2, read_events(events)
    run = server.wait(run_id, timeout=30)
    assert run["status"] == "success", summarize(run)
    assert all(t["attempt"] == 1 for t in tasks_named(run, "slow")), summarize(run)


def max_concurrency(events: List[Dict[str, Any]]) -> Dict[str, int]:
    """The most attempts each worker ran at once, from its start/end events."""
    by_worker: Dict[str, List[Dict[str, Any]]] = defaultdict(list)
    for e in events:
        by_worker[e["worker"]].append(e)
    peaks = {}
    for worker, evs in by_worker.items():
        # Ends sort before starts at the same instant: a slot is reused only
        # after the previous attempt reported, which follows its end event.
        ordered = sorted(evs, key=lambda e: (e["time"], e["event"] == "start"))
        running = peak = 0
        for e in ordered:
            running += 1 if e["event"] == "start" else -1
            peak = max(peak, running)
        peaks[worker] = peak
    return peaks


def test_two_workers_share_a_fan_out_and_survive_a_kill(
    server: OrkServer, start_worker: Callable[..., WorkerProcess], events: Path
) -> None:
    """The issue's pool test: 2 workers x 4 slots, 200 items, one SIGKILLed mid-run."""
    a = start_worker("w-a", slots=4)
    start_worker("w-b", slots=4)
    server.deploy(
        _yaml(
            """
            name: py-pool-fan-out
            tasks:
              - name: item
                executor: workers
                handler: slow
                parallel: 200
                retries: 2
                retry_delay_seconds: 0
                input:
                  seconds: 0.2
            """
        )
    )
    run_id = server.start("py-pool-fan-out")
    def a_is_busy_midway() -> bool:
        mine = [e for e in read_events(events) if e["worker"] == "w-a"]
        ends = sum(e["event"] == "end" for e in mine)
        starts = sum(e["event"] == "start" for e in mine)
        return ends >= 20 and starts > ends

    wait_for(a_is_busy_midway, 60, "w-a to finish 20 tasks and be running more")
    a.process.send_signal(signal.SIGKILL)
    a.process.wait()
    killed_at = time.time()

    run = server.wait(run_id, timeout=120)
    assert run["status"] == "success", summarize(run)
    items = tasks_named(run, "item")
    assert len(items) == 200
    assert sorted(output_value(t)["index"] for t in items) == list(range(200))

    log = read_events(events)
    peaks = max_concurrency(log)
    assert set(peaks) == {"w-a", "w-b"}, peaks
    assert all(peak <= 4 for peak in peaks.values()), peaks
    assert peaks["w-b"] >= 2, f"w-b never ran tasks side by side: {peaks}"

    # Attempts that w-a started and never ended were lost with it: the server
    # failed each within a few seconds of the kill, and it ran again on w-b.
    # (When the retry starts depends on the queue: w-b still has the rest of
    # the fan-out to work through.)
    by_id = {t["id"]: t for t in items}
    ended = {(e["task_run_id"], e["attempt"]) for e in log if e["event"] == "end"}
    lost = [
        e for e in log
        if e["worker"] == "w-a" and e["event"] == "start" and (e["task_run_id"], e["attempt"]) not in ended
    ]
    assert lost, "w-a was killed with nothing running; the test proves nothing"
    for e in lost:
        attempts = by_id[e["task_run_id"]]["attempts"]
        first = attempts[e["attempt"] - 1]
        assert first["status"] == "failed", attempts
        failed_after = parse_time(first["finished_at"]) - killed_at
        print(f"lost {e['index']}: failed {failed_after:.2f}s after the kill: {first['error']!r}")
        assert failed_after < 5, f"the server failed lost attempt {e} {failed_after:.1f}s after the kill: {first}"
        retries = [
            r for r in log
            if r["task_run_id"] == e["task_run_id"] and r["event"] == "start" and r["attempt"] > e["attempt"]
        ]
        assert retries, f"lost attempt {e} never ran again"
        assert retries[0]["worker"] == "w-b"
    assert all(e["worker"] == "w-b" for e in log if e["time"] > killed_at + 0.01), "w-a ran after the kill"


def parse_time(text: str) -> float:
    from ork._context import parse_rfc3339

    parsed = parse_rfc3339(text)
    assert parsed is not None, text
    return parsed.timestamp()
