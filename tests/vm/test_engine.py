"""The VFIO engine on real kernels, inside a bench guest.

msixd runs in this test process (its gRPC server on a socket under /tmp), so the
test can also use msixd's own device fd to make the e1000e raise a real
interrupt: a second process could not open the VFIO group msixd holds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from msixd.api.msix.v1 import msix_pb2 as pb
from msixd.kernel.cpulist import parse_cpulist
from tests import truth
from tests.vm import guest
from tests.vm.inprocess import Msixd

pytestmark = pytest.mark.vm

E1000E = (0x8086, 0x10D3)
NVME = (0x1B36, 0x0010)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def msixd(state_dir: Path) -> Iterator[Msixd]:
    daemon = Msixd(state_dir)
    yield daemon
    daemon.stop()


@pytest.fixture
def e1000e(msixd: Msixd) -> Iterator[str]:
    bdf = guest.find_device(*E1000E)
    yield from _bound(msixd, bdf)


@pytest.fixture
def nvme(msixd: Msixd) -> Iterator[str]:
    bdf = guest.find_device(*NVME)
    yield from _bound(msixd, bdf)


def _bound(msixd: Msixd, bdf: str) -> Iterator[str]:
    before = guest.driver_of(bdf)
    answer = msixd.stub.Bind(pb.BindRequest(bdf=bdf))
    assert answer.driver == "vfio-pci" and answer.previous_driver == (before or "")
    yield bdf
    released = msixd.stub.Release(pb.ReleaseRequest(bdf=bdf))
    assert released.driver == (before or ""), f"{bdf} went back to {released.driver!r}, not {before!r}"


def _vectors_with_trigger(device: pb.Device) -> list[int]:
    return sorted(v.index for v in device.vectors if any(a.startswith("vfio-msix[") for a in v.actions))


def _dynamic_kernel() -> bool:
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    return (major, minor) >= (6, 5)


def test_real_interrupt_lands_on_the_chosen_cpu(msixd: Msixd, e1000e: str) -> None:
    enabled = msixd.stub.Enable(pb.EnableRequest(bdf=e1000e, vectors=5))
    assert enabled.path == pb.RESIZE_PATH_ENABLE
    assert _vectors_with_trigger(enabled.device) == [0, 1, 2, 3, 4]
    assert enabled.device.ownership.dynamic_msix == _dynamic_kernel()

    placed = msixd.stub.SetAffinity(pb.SetAffinityRequest(bdf=e1000e, vector=3, cpus="1"))
    assert list(placed.affinity) == [1]
    irq = placed.irq
    assert parse_cpulist(Path(f"/proc/irq/{irq}/smp_affinity_list").read_text()) == {1}

    before = truth.proc_interrupts(Path("/proc"))[irq].counts
    owned = msixd.services.owner.owned(e1000e)
    assert owned is not None
    guest.raise_e1000e_interrupt(owned.device_fd, 3)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        after = truth.proc_interrupts(Path("/proc"))[irq].counts
        if sum(after) > sum(before):
            break
        time.sleep(0.05)
    assert after[1] > before[1], f"IRQ {irq} counts went {before} -> {after}: not counted on CPU 1"
    assert after[0] == before[0], "the interrupt landed on CPU 0"

    sample = next(iter(msixd.stub.Watch(pb.WatchRequest(bdf=e1000e, interval_ms=100, count=1))))
    vector = next(v for v in sample.vectors if v.vector == 3)
    assert vector.source == pb.COUNT_SOURCE_EVENTFD and vector.total >= 1
    guest.quiesce_e1000e(owned.device_fd)  # before the fixture releases the device


def test_resize_nvme_keeps_affinities(msixd: Msixd, nvme: str) -> None:
    stub = msixd.stub
    assert stub.Enable(pb.EnableRequest(bdf=nvme, vectors=16)).path == pb.RESIZE_PATH_ENABLE
    stub.SetAffinity(pb.SetAffinityRequest(bdf=nvme, vector=5, cpus="1"))
    stub.SetAffinity(pb.SetAffinityRequest(bdf=nvme, vector=6, cpus="0"))

    grown = stub.Enable(pb.EnableRequest(bdf=nvme, vectors=40))
    expected = pb.RESIZE_PATH_DYNAMIC if _dynamic_kernel() else pb.RESIZE_PATH_REENABLE
    assert grown.path == expected and grown.vectors_before == 16
    assert _vectors_with_trigger(grown.device) == list(range(40))
    by_index = {v.index: v for v in grown.device.vectors}
    assert list(by_index[5].affinity) == [1] and list(by_index[6].affinity) == [0]

    shrunk = stub.Enable(pb.EnableRequest(bdf=nvme, vectors=8))
    assert shrunk.path == pb.RESIZE_PATH_SHRINK
    assert _vectors_with_trigger(shrunk.device) == list(range(8))
    by_index = {v.index: v for v in shrunk.device.vectors}
    assert list(by_index[5].affinity) == [1] and list(by_index[6].affinity) == [0]

    count = stub.Trigger(pb.TriggerRequest(bdf=nvme, vector=2)).eventfd_count
    assert count == 1
    assert stub.Trigger(pb.TriggerRequest(bdf=nvme, vector=2)).eventfd_count == 2


def test_partial_or_oversized_request_is_refused(msixd: Msixd, e1000e: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        msixd.stub.Enable(pb.EnableRequest(bdf=e1000e, vectors=6))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "1 to 5" in err.value.details()


def test_restart_reapplies_state(state_dir: Path) -> None:
    first = Msixd(state_dir)
    bdf = guest.find_device(*E1000E)
    before = guest.driver_of(bdf)
    try:
        first.stub.Bind(pb.BindRequest(bdf=bdf))
        first.stub.Enable(pb.EnableRequest(bdf=bdf, vectors=4))
        first.stub.SetAffinity(pb.SetAffinityRequest(bdf=bdf, vector=2, cpus="1"))
        first.stop()
        assert not guest.msi_irqs(bdf), "stopping msixd releases every vector"

        second = Msixd(state_dir)
        try:
            device = second.stub.GetDevice(pb.GetDeviceRequest(bdf=bdf))
            assert _vectors_with_trigger(device) == [0, 1, 2, 3]
            assert list({v.index: v for v in device.vectors}[2].affinity) == [1]
        finally:
            second.stub.Release(pb.ReleaseRequest(bdf=bdf))
            second.stop()
    finally:
        if guest.driver_of(bdf) != before:
            guest.rebind(bdf, before)
    assert guest.driver_of(bdf) == before


def test_group_held_by_another_process(msixd: Msixd, e1000e: str) -> None:
    group = guest.iommu_group(e1000e)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import os, time; fd = os.open('/dev/vfio/{group}', os.O_RDWR); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(grpc.RpcError) as err:
            msixd.stub.Enable(pb.EnableRequest(bdf=e1000e, vectors=2))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert f"pid {holder.pid}" in err.value.details()
    finally:
        holder.kill()
        holder.wait()
    assert msixd.stub.Enable(pb.EnableRequest(bdf=e1000e, vectors=2)).path == pb.RESIZE_PATH_ENABLE


def test_kernel_driver_vectors_move_unless_managed(msixd: Msixd, bench_kernel: str) -> None:
    """Affinity works on vectors msixd does not own; a managed one is refused on both kernels:
    6.12 shows its smp_affinity_list read-only (0444), 6.1 shows 0644 and fails the write with EIO."""
    e1000e = guest.find_device(*E1000E)
    assert guest.driver_of(e1000e) == "e1000e"
    with pytest.raises(grpc.RpcError) as err:  # down: e1000e allocated its vectors but requested no IRQ yet
        msixd.stub.SetAffinity(pb.SetAffinityRequest(bdf=e1000e, vector=0, cpus="1"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "no handler" in err.value.details()
    guest.netdev_up(e1000e)
    placed = msixd.stub.SetAffinity(pb.SetAffinityRequest(bdf=e1000e, vector=0, cpus="1"))
    assert list(placed.affinity) == [1] and list(placed.effective_affinity) == [1]
    assert parse_cpulist(Path(f"/proc/irq/{placed.irq}/smp_affinity_list").read_text()) == {1}

    nvme = guest.find_device(*NVME)
    assert guest.driver_of(nvme) == "nvme"
    device = msixd.stub.GetDevice(pb.GetDeviceRequest(bdf=nvme))
    io_queue = next(v for v in device.vectors if any(a.startswith("nvme") and not a.endswith("q0") for a in v.actions))
    assert io_queue.affinity_settable is (bench_kernel == "6.1"), "only 6.12 tells by the file mode"
    before = Path(f"/proc/irq/{io_queue.irq}/smp_affinity_list").read_text()
    with pytest.raises(grpc.RpcError) as err:
        msixd.stub.SetAffinity(pb.SetAffinityRequest(bdf=nvme, vector=io_queue.index, cpus="0"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "refuses to move it" in err.value.details()
    assert Path(f"/proc/irq/{io_queue.irq}/smp_affinity_list").read_text() == before
