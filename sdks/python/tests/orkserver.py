"""A real ``ork dev`` server for the tests, and a small client over the generated stubs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import grpc
from google.protobuf import json_format

from ork.v1 import run_pb2, run_pb2_grpc, workflow_pb2, workflow_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[3]

FINISHED = {"success", "failed", "cancelled"}


def ork_binary() -> Path:
    """The ``ork`` binary under test: ``$ORK_BIN`` or ``target/debug/ork``."""
    path = Path(os.environ.get("ORK_BIN") or REPO_ROOT / "target" / "debug" / "ork")
    if not path.exists():
        raise RuntimeError(
            f"{path} does not exist; build it with `cargo build --bins -p ork-cli -p ork-worker` "
            "or point ORK_BIN at an ork binary"
        )
    return path


def make_certs(folder: Path) -> Dict[str, Path]:
    """Fresh test certificates (a CA, server and client certificates it signed,
    and another CA with its own client), made by ``ork-test-certs`` next to
    the ``ork`` binary."""
    tool = ork_binary().with_name("ork-test-certs")
    if not tool.exists():
        raise RuntimeError(f"{tool} does not exist; build it with `cargo build --bins -p ork-tests`")
    subprocess.run([str(tool), str(folder)], check=True)
    names = ["ca", "server", "client", "other-ca", "other-client"]
    files = {name: folder / f"{name}.pem" for name in names}
    for name in ["server", "client", "other-client"]:
        files[f"{name}-key"] = folder / f"{name}.key"
    return files


class OrkServer:
    """``ork dev`` on a free port with its own data directory.

    With ``certs`` (from :func:`make_certs`) it serves TLS and the helpers
    below connect with the client certificate; with ``token_file`` it
    requires tokens and the helpers send the admin token written there.
    """

    def __init__(
        self,
        data_dir: Path,
        extra_args: Optional[List[str]] = None,
        certs: Optional[Dict[str, Path]] = None,
        token_file: Optional[Path] = None,
    ) -> None:
        self.data_dir = data_dir
        self.certs = certs
        env = dict(os.environ)
        # Launched `.py` tasks run `python3` from PATH: make it this interpreter,
        # which has the SDK installed.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env.pop("ORK_SERVER", None)
        env.pop("ORK_TOKEN", None)
        env.setdefault("RUST_LOG", "warn")
        args = [str(ork_binary()), "dev", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)]
        if certs is not None:
            args += ["--tls-cert", str(certs["server"]), "--tls-key", str(certs["server-key"])]
        if token_file is not None:
            args += ["--auth", "--bootstrap-token-file", str(token_file)]
        self.process = subprocess.Popen(
            args + (extra_args or []),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stderr_lines: List[str] = []
        self._address = threading.Event()
        self.url = ""
        threading.Thread(target=self._read_stderr, daemon=True).start()
        if not self._address.wait(60):
            self.stop()
            raise RuntimeError("ork dev did not print its address in 60s:\n" + "\n".join(self.stderr_lines[-30:]))
        self.target = self.url.split("://", 1)[1]
        self.token = token_file.read_text().strip() if token_file is not None else ""
        self.metadata: Tuple[Tuple[str, str], ...] = (
            (("authorization", f"Bearer {self.token}"),) if self.token else ()
        )
        if certs is not None:
            self.channel = grpc.secure_channel(self.target, self.credentials())
        else:
            self.channel = grpc.insecure_channel(self.target)
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.workflows = workflow_pb2_grpc.WorkflowServiceStub(self.channel)
        self.runs = run_pb2_grpc.RunServiceStub(self.channel)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            line = line.rstrip("\n")
            self.stderr_lines.append(line)
            match = re.search(r"listening on (https?://\S+)", line)
            if match and not self._address.is_set():
                self.url = match.group(1)
                self._address.set()

    def credentials(self, client: str = "client") -> grpc.ChannelCredentials:
        """TLS credentials trusting the test CA, with a client certificate."""
        assert self.certs is not None
        return grpc.ssl_channel_credentials(
            root_certificates=self.certs["ca"].read_bytes(),
            private_key=self.certs[f"{client}-key"].read_bytes(),
            certificate_chain=self.certs[client].read_bytes(),
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    # -- client helpers ------------------------------------------------------

    def deploy(self, yaml: str, files: Optional[Dict[str, str]] = None) -> workflow_pb2.Workflow:
        """Deploys a workflow with the contents of the files its tasks name."""
        request = workflow_pb2.DeployWorkflowRequest(
            yaml=yaml, source="test.yaml", files={k: v.encode() for k, v in (files or {}).items()}
        )
        return self.workflows.DeployWorkflow(request, timeout=30, metadata=self.metadata).workflow

    def start(self, workflow: str, input: Any = None) -> str:
        """Starts a run and returns its id."""
        request = run_pb2.StartRunRequest(workflow=workflow)
        if input is not None:
            json_format.ParseDict(input, request.input)
        return str(self.runs.StartRun(request, timeout=30, metadata=self.metadata).run.id)

    def get(self, run_id: str) -> Dict[str, Any]:
        """The run with its task runs, as proto3 JSON data."""
        run = self.runs.GetRun(run_pb2.GetRunRequest(id=run_id), timeout=30, metadata=self.metadata).run
        return json_format.MessageToDict(run, preserving_proto_field_name=True)

    def wait(self, run_id: str, timeout: float = 120) -> Dict[str, Any]:
        """Polls until the run ends; fails the test with its state on timeout."""
        give_up = time.monotonic() + timeout
        while True:
            run = self.get(run_id)
            if run.get("status") in FINISHED:
                return run
            if time.monotonic() > give_up:
                raise AssertionError(f"run {run_id} did not finish in {timeout}s: {summarize(run)}")
            time.sleep(0.2)

    def logs(self, run_id: str, task: str = "") -> List[Dict[str, Any]]:
        """Every log line of a run (or one task of it)."""
        lines: List[Dict[str, Any]] = []
        cursor = ""
        while True:
            reply = self.runs.GetTaskLogs(
                run_pb2.GetTaskLogsRequest(run_id=run_id, task=task, cursor=cursor),
                timeout=30,
                metadata=self.metadata,
            )
            lines.extend(json_format.MessageToDict(line, preserving_proto_field_name=True) for line in reply.lines)
            if not reply.lines or not reply.next_cursor:
                return lines
            cursor = reply.next_cursor

    def cancel(self, run_id: str) -> None:
        self.runs.CancelRun(run_pb2.CancelRunRequest(id=run_id), timeout=30, metadata=self.metadata)


def tasks_named(run: Dict[str, Any], name: str) -> List[Dict[str, Any]]:
    """The task runs of ``name``, ordered by parallel index."""
    found = [t for t in run.get("tasks", []) if t["name"] == name]
    return sorted(found, key=lambda t: t.get("parallel_index", 0))


def summarize(run: Dict[str, Any]) -> str:
    """A short text of a run's state for assertion messages."""
    parts = [f"run {run.get('id')} {run.get('status')}"]
    for t in run.get("tasks", [])[:20]:
        error = (t.get("error") or "")[-400:]
        parts.append(f"  {t['name']}[{t.get('parallel_index', '-')}] {t['status']} attempt={t.get('attempt')} {error}")
    return "\n".join(parts)


def output_value(task: Dict[str, Any]) -> Any:
    """A task run's output; proto3 JSON keeps numbers as floats, so normalise them."""
    from ork._task import normalize_numbers

    return normalize_numbers(task.get("output"))

