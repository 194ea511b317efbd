"""msixd and msixctl as the processes an operator runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[2]


def wait_serving(socket_path: Path, proc: subprocess.Popen[str], timeout: float = 90.0) -> None:
    """Until msixd answers its health check. Generous: a bench guest under software emulation,
    on a loaded machine, takes many seconds to import grpc; readiness is not a timing test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"msixd exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
        if socket_path.exists():
            with grpc.insecure_channel(f"unix:{socket_path}") as channel:
                try:
                    answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
        time.sleep(0.1)
    raise AssertionError(f"msixd did not become ready in {timeout:.0f} s")


@pytest.fixture
def msixd(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """msixd(*args) starts the daemon on a temporary socket and returns the socket path."""
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> Path:
        socket_path = tmp_path / f"msixd{len(procs)}.sock"
        proc = subprocess.Popen(
            [sys.executable, "-m", "msixd.main", "--socket", str(socket_path), "--log-format", "json",
             "--state-dir", str(tmp_path / "state"), "--config", str(tmp_path / "absent.toml"),
             "--policy-dir", str(tmp_path / "policy.d"), *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        procs.append(proc)
        wait_serving(socket_path, proc)
        return socket_path

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


def msixctl(socket_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "msixctl.main", "--socket", str(socket_path), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )


def msixctl_json(socket_path: Path, *args: str) -> Any:
    done = msixctl(socket_path, *args, "-o", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
