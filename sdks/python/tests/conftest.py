"""Fixtures: one real ``ork dev`` server for the whole session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# gRPC's fork handlers serve code that forks without exec. With them on, a
# worker process that Python 3.9's subprocess (plain fork, then exec) starts
# while the tests' channel is busy can fail to attach ("epoll_wait error: Bad
# file descriptor"); nothing here forks without exec, so they are turned off.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from orkserver import OrkServer  # noqa: E402


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrkServer]:
    """``ork dev`` on a free port; heartbeats every second so lost work shows fast."""
    data_dir = tmp_path_factory.mktemp("ork-data")
    srv = OrkServer(data_dir, ["--heartbeat-interval", "1", "--heartbeat-timeout", "5"])
    try:
        yield srv
    finally:
        srv.stop()
        if srv.process.returncode not in (0, -15, None):
            print("ork dev stderr:\n" + "\n".join(srv.stderr_lines[-50:]), file=sys.stderr)
