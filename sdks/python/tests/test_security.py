"""The Python SDK against a server that requires tokens and serves TLS.

A pool worker reaches an ``https://`` server trusting the test CA, with a
worker token, all from the variables every ork client reads; the REST
gateway answers over the same TLS port; a token of the wrong role is refused
for good; mutual TLS refuses a worker without the right client certificate.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, Iterator

import grpc
import pytest

from ork.v1 import token_pb2, token_pb2_grpc
from orkserver import OrkServer, make_certs, output_value, summarize, tasks_named
from test_pool import WORKER_SCRIPT, WorkerProcess

WORKFLOW = """
name: secure
tasks:
  - name: hello
    executor: workers
    handler: echo
    input: { word: "tls" }
"""


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory, certs: Dict[str, Path]) -> Iterator[OrkServer]:
    """``ork dev`` with TLS and tokens on a free port."""
    data = tmp_path_factory.mktemp("secure-data")
    srv = OrkServer(data, ["--heartbeat-interval", "1"], certs=certs, token_file=data / "admin.token")
    try:
        yield srv
    finally:
        srv.stop()


def make_token(srv: OrkServer, name: str, role: str) -> str:
    stub = token_pb2_grpc.TokenServiceStub(srv.channel)
    reply = stub.CreateToken(token_pb2.CreateTokenRequest(name=name, role=role), timeout=30, metadata=srv.metadata)
    return str(reply.secret)


def worker_env(srv: OrkServer, token: str, client: str = "client") -> Dict[str, str]:
    assert srv.certs is not None
    env = dict(os.environ)
    env.update(
        {
            "ORK_TOKEN": token,
            "ORK_CA_CERT": str(srv.certs["ca"]),
            "ORK_CLIENT_CERT": str(srv.certs[client]),
            "ORK_CLIENT_KEY": str(srv.certs[f"{client}-key"]),
        }
    )
    return env


def test_pool_worker_over_tls_with_a_worker_token(secure: OrkServer, tmp_path: Path) -> None:
    assert secure.url.startswith("https://")
    token = make_token(secure, "py-pool", "worker")
    events = tmp_path / "events.jsonl"
    events.touch()
    worker = WorkerProcess(secure, "py-tls", 2, events, env=worker_env(secure, token))
    try:
        secure.deploy(WORKFLOW)
        run = secure.wait(secure.start("secure"))
        assert run["status"] == "success", summarize(run)
        (hello,) = tasks_named(run, "hello")
        assert output_value(hello) == {"got": {"word": "tls"}, "worker": "py-tls"}
    finally:
        worker.terminate()


def test_rest_answers_over_the_same_tls_port(secure: OrkServer) -> None:
    assert secure.certs is not None
    context = ssl.create_default_context(cafile=str(secure.certs["ca"]))
    request = urllib.request.Request(secure.url + "/workflows", headers={"Authorization": f"Bearer {secure.token}"})
    with urllib.request.urlopen(request, context=context, timeout=30) as reply:
        assert reply.status == 200
        json.load(reply)
    anonymous = urllib.request.Request(secure.url + "/workflows")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(anonymous, context=context, timeout=30)
    assert refused.value.code == 401


def test_a_token_of_another_role_is_refused_for_good(secure: OrkServer, tmp_path: Path) -> None:
    viewer = make_token(secure, "py-viewer", "viewer")
    worker = subprocess.run(
        [sys.executable, str(WORKER_SCRIPT), secure.url, "py-viewer", "1", str(tmp_path / "events")],
        env=worker_env(secure, viewer),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode != 0
    assert "PERMISSION_DENIED" in worker.stderr and "worker token" in worker.stderr, worker.stderr


def test_settings_that_cannot_work_are_refused_before_connecting() -> None:
    import ork

    with pytest.raises(ValueError, match="not https://"):
        ork.Worker(tasks=[lambda input: input], server="http://127.0.0.1:1", ca_cert="/nonexistent/ca.pem")
    with pytest.raises(ValueError, match="needs its key"):
        ork.Worker(tasks=[lambda input: input], server="https://127.0.0.1:1", client_cert="/x.pem")


def test_mutual_tls_refuses_a_client_without_the_right_certificate(tmp_path: Path, certs: Dict[str, Path]) -> None:
    data = tmp_path / "mtls"
    data.mkdir()
    srv = OrkServer(
        data,
        [
            "--tls-client-ca", str(certs["ca"]),
            "--tls-worker-cert", str(certs["client"]),
            "--tls-worker-key", str(certs["client-key"]),
        ],
        certs=certs,
        token_file=data / "admin.token",
    )
    try:
        srv.deploy(WORKFLOW)  # the helpers present the client certificate
        for creds in [
            grpc.ssl_channel_credentials(root_certificates=certs["ca"].read_bytes()),
            srv.credentials("other-client"),
        ]:
            channel = grpc.secure_channel(srv.target, creds)
            stub = token_pb2_grpc.TokenServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.ListTokens(token_pb2.ListTokensRequest(), timeout=30, metadata=srv.metadata)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            channel.close()
    finally:
        srv.stop()
