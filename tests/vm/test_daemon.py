"""msixd as a process on a real kernel: SIGTERM finishes in-flight RPCs, releases every
vector and keeps the state, which the next start re-applies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from msixd.api.msix.v1 import msix_pb2 as pb
from msixd.api.msix.v1 import msix_pb2_grpc
from tests.e2e.conftest import wait_serving
from tests.vm import guest

pytestmark = pytest.mark.vm

E1000E = (0x8086, 0x10D3)


def start(directory: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "msixd.main", "--socket", str(directory / "msixd.sock"), "--state-dir",
         str(directory / "state"), "--config", str(directory / "absent.toml"), "--log-format", "json",
         "--policy-dir", str(directory / "policy.d")],
        stdout=(directory / "msixd.log").open("a"), stderr=subprocess.STDOUT, text=True,
    )
    wait_serving(directory / "msixd.sock", proc)
    return proc


def stub(directory: Path) -> msix_pb2_grpc.MsixServiceStub:
    # Clients in this process: a client process per call costs seconds of imports under emulation.
    return msix_pb2_grpc.MsixServiceStub(grpc.insecure_channel(f"unix:{directory / 'msixd.sock'}"))


def own(client: msix_pb2_grpc.MsixServiceStub, bdf: str, vectors: int, vector: int, cpus: str) -> None:
    """Bind, enable, and place one vector: the state a restart must bring back."""
    client.Bind(pb.BindRequest(bdf=bdf))
    client.Enable(pb.EnableRequest(bdf=bdf, vectors=vectors))
    client.SetAffinity(pb.SetAffinityRequest(bdf=bdf, vector=vector, cpus=cpus))


def test_sigterm_releases_vectors_keeps_state_and_restart_reapplies(tmp_path: Path) -> None:
    bdf = guest.find_device(*E1000E)
    before = guest.driver_of(bdf)
    daemon = start(tmp_path)
    try:
        client = stub(tmp_path)
        own(client, bdf, 4, 2, "1")
        assert len(guest.msi_irqs(bdf)) == 4
        # Two samples left, 0.2 s of work against the 3 s grace: a slow guest still has room.
        samples = client.Watch(pb.WatchRequest(bdf=bdf, interval_ms=100, count=3))
        assert next(samples).bdf == bdf
        daemon.terminate()  # while the watch stream is in flight
        assert len(list(samples)) == 2, "the in-flight stream finished"
        assert daemon.wait(timeout=90) == 0
        assert guest.msi_irqs(bdf) == [], "no vector stays enabled"
        state = json.loads((tmp_path / "state/state.json").read_text())["devices"][bdf]
        assert state["vectors"] == 4 and state["affinities"] == {"2": [1]} and state["previous_driver"] == before

        daemon = start(tmp_path)
        client = stub(tmp_path)
        shown = client.GetDevice(pb.GetDeviceRequest(bdf=bdf))
        assert shown.ownership.vectors_enabled == 4
        assert list({v.index: v for v in shown.vectors}[2].affinity) == [1]
        assert client.Release(pb.ReleaseRequest(bdf=bdf)).driver == before
    finally:
        daemon.terminate()
        daemon.wait(timeout=90)
        if guest.driver_of(bdf) != before:
            guest.rebind(bdf, before)
