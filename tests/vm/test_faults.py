"""Faults on real kernels: a device hot-removed while owned and watched, and
msixd killed with SIGKILL. Each injects the fault for real inside the guest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest

from msixd.api.msix.v1 import msix_pb2 as pb
from tests.vm import guest
from tests.vm.inprocess import Msixd
from tests.vm.test_daemon import own, start, stub

pytestmark = pytest.mark.vm

E1000E = (0x8086, 0x10D3)
NVME = (0x1B36, 0x0010)


def wait_for(condition: object, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.2)
    return False


def test_hot_removed_device_is_reported_and_taken_back_after_rescan(tmp_path: Path) -> None:
    bdf = guest.find_device(*E1000E)
    nvme = guest.find_device(*NVME)
    before = guest.driver_of(bdf)
    msixd = Msixd(tmp_path)
    try:
        own(msixd.stub, bdf, 4, 1, "1")
        watch_end: list[grpc.StatusCode] = []
        watching = threading.Event()

        def watch() -> None:
            try:
                for _ in msixd.stub.Watch(pb.WatchRequest(bdf=bdf, interval_ms=200, count=0)):
                    watching.set()
            except grpc.RpcError as err:
                watch_end.append(err.code())
                watching.set()

        watcher = threading.Thread(target=watch)
        watcher.start()
        assert watching.wait(60) and not watch_end, f"the watch answers before the device goes ({watch_end})"
        # The kernel blocks this write until msixd closes the device: it must let go.
        removal = subprocess.run(["sh", "-c", f"echo 1 > /sys/bus/pci/devices/{bdf}/remove"], timeout=60)
        assert removal.returncode == 0 and not Path(f"/sys/bus/pci/devices/{bdf}").exists()
        watcher.join(timeout=30)
        assert watch_end == [grpc.StatusCode.NOT_FOUND], "the watch ends: the device is gone"
        with pytest.raises(grpc.RpcError) as err:
            msixd.stub.GetDevice(pb.GetDeviceRequest(bdf=bdf))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert msixd.stub.GetDevice(pb.GetDeviceRequest(bdf=nvme)).bdf == nvme, "the others are still served"

        Path("/sys/bus/pci/rescan").write_text("1")
        assert wait_for(lambda: msixd.services.owner.owned(bdf) is not None), "taken back after the rescan"

        # Ownership comes back first, the placement a moment later: wait for the whole of it.
        def placed() -> bool:
            device = msixd.stub.GetDevice(pb.GetDeviceRequest(bdf=bdf))
            vectors = {v.index: list(v.affinity) for v in device.vectors}
            return device.driver == "vfio-pci" and device.ownership.vectors_enabled == 4 and vectors.get(1) == [1]

        assert wait_for(placed), "the four vectors and vector 1's placement are back"
        assert msixd.stub.Release(pb.ReleaseRequest(bdf=bdf)).driver == before
    finally:
        msixd.stop()
        if Path(f"/sys/bus/pci/devices/{bdf}").exists() and guest.driver_of(bdf) != before:
            guest.rebind(bdf, before)


def test_sigkill_then_restart_reapplies_saved_state(tmp_path: Path) -> None:
    bdf = guest.find_device(*E1000E)
    before = guest.driver_of(bdf)
    daemon = start(tmp_path)
    try:
        own(stub(tmp_path), bdf, 3, 0, "1")
        os.kill(daemon.pid, signal.SIGKILL)
        daemon.wait(timeout=90)
        # The kernel closed msixd's files: MSI-X is off, the device still on vfio-pci.
        assert guest.msi_irqs(bdf) == [] and guest.driver_of(bdf) == "vfio-pci"
        saved = json.loads((tmp_path / "state/state.json").read_text())["devices"][bdf]
        assert saved["vectors"] == 3 and saved["affinities"] == {"0": [1]}

        daemon = start(tmp_path)
        device = stub(tmp_path).GetDevice(pb.GetDeviceRequest(bdf=bdf))
        assert device.ownership.vectors_enabled == 3 and len(guest.msi_irqs(bdf)) == 3
        assert list({v.index: v for v in device.vectors}[0].affinity) == [1]
        events = [json.loads(line) for line in (tmp_path / "msixd.log").read_text().splitlines() if line[:1] == "{"]
        restored = [e for e in events if e["logger"] == "msixd.audit" and e["event"] == "restore"]
        assert [(e["bdf"], e["vectors"], e["by"]) for e in restored] == [(bdf, 3, "msixd")], "the restore is audited"
        assert stub(tmp_path).Release(pb.ReleaseRequest(bdf=bdf)).driver == before
    finally:
        daemon.kill()
        daemon.wait(timeout=90)
        if guest.driver_of(bdf) != before:
            guest.rebind(bdf, before)
