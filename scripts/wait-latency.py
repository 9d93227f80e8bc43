#!/usr/bin/env python3
"""How long `ork run start NAME --wait` takes, as a user runs it.

Starts `ork dev` from BIN_DIR on a free port with a fresh data dir, deploys a
one-task workflow and a chain of 40 tasks (shell scripts, subprocess
executor), then times `ork run start ... --wait` from the shell's point of
view (process start to exit) RUNS times each and prints, per workflow, the
median wall time, the median run duration from the server's records
(created -> finished) and the median difference: what waiting itself adds.

    scripts/wait-latency.py target/release [--runs 9]
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from datetime import datetime

TASK = "#!/bin/sh\nexit 0\n"


def chain_yaml(n: int) -> str:
    lines = ["name: chain", "tasks:"]
    for i in range(n):
        lines.append(f"  - name: t{i}")
        lines.append("    file: t.sh")
        if i:
            lines.append(f"    depends_on: [t{i - 1}]")
    return "\n".join(lines) + "\n"


def when(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bin_dir")
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    ork = os.path.join(os.path.abspath(args.bin_dir), "ork")
    work = tempfile.mkdtemp(prefix="ork-wait-latency-")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, ORK_SERVER=f"http://127.0.0.1:{port}", NO_COLOR="1")
    for name, yaml in [("one", "name: one\ntasks:\n  - name: t\n    file: t.sh\n"), ("chain", chain_yaml(40))]:
        os.makedirs(os.path.join(work, name))
        with open(os.path.join(work, name, "wf.yaml"), "w") as f:
            f.write(yaml)
        with open(os.path.join(work, name, "t.sh"), "w") as f:
            f.write(TASK)
    log = open(os.path.join(work, "dev.log"), "w")
    dev = subprocess.Popen(
        [ork, "dev", "--listen", f"127.0.0.1:{port}", "--data-dir", os.path.join(work, "data")],
        stdout=log, stderr=log, env=env,
    )
    try:
        for _ in range(200):
            if subprocess.run([ork, "workflow", "list"], env=env, capture_output=True).returncode == 0:
                break
            time.sleep(0.05)
        for name in ["one", "chain"]:
            subprocess.run([ork, "workflow", "deploy", os.path.join(work, name, "wf.yaml")],
                           env=env, check=True, capture_output=True)
        for name in ["one", "chain"]:
            walls, durations = [], []
            for i in range(args.runs + 1):
                started = time.monotonic()
                out = subprocess.run([ork, "run", "start", name, "--wait", "-o", "json"],
                                     env=env, capture_output=True, text=True, check=True)
                wall = time.monotonic() - started
                run = json.loads(out.stdout)
                if i == 0:
                    continue  # warm-up
                walls.append(wall * 1000)
                durations.append((when(run["finished_at"]) - when(run["created_at"])) * 1000)
            waits = [w - d for w, d in zip(walls, durations)]
            print(f"{name:>6}: wall {statistics.median(walls):7.1f} ms   "
                  f"run {statistics.median(durations):7.1f} ms   "
                  f"wall - run {statistics.median(waits):6.1f} ms   (median of {args.runs})")
    finally:
        dev.terminate()
        dev.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
