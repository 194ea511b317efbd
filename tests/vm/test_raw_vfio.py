"""The kernel's VFIO interface by itself, with plain ioctls: both kernels."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import truth
from tests.vm import guest, rawvfio

pytestmark = pytest.mark.vm

E1000E = (0x8086, 0x10D3)


@pytest.fixture
def e1000e_on_vfio() -> Iterator[str]:
    bdf = guest.find_device(*E1000E)
    before = guest.driver_of(bdf)
    guest.bind_vfio(bdf)
    try:
        yield bdf
    finally:
        guest.rebind(bdf, before)
    assert guest.driver_of(bdf) == before


def test_bring_up_and_irq_info(e1000e_on_vfio: str, bench_kernel: str) -> None:
    opened = rawvfio.open_device(e1000e_on_vfio, guest.iommu_group(e1000e_on_vfio))
    try:
        assert opened.api_version == 0 and opened.type1v2
        assert opened.group_flags & 1, "the group is viable"
        flags, regions, irqs = rawvfio.device_info(opened.device)
        assert flags & 2 and regions >= 9 and irqs == 5  # VFIO_DEVICE_FLAGS_PCI, 9 PCI regions, 5 irq indexes
        msix_flags, count = rawvfio.irq_info(opened.device, rawvfio.MSIX)
        assert count == 5
        # 6.1 has no dynamic MSI-X (NORESIZE set); 6.12 with interrupt remapping does.
        assert bool(msix_flags & rawvfio.NORESIZE) == (bench_kernel == "6.1")
    finally:
        opened.close()


def test_enable_route_and_raise_a_real_interrupt(e1000e_on_vfio: str, bench_kernel: str) -> None:
    bdf = e1000e_on_vfio
    opened = rawvfio.open_device(bdf, guest.iommu_group(bdf))
    fds = [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in range(5)]
    try:
        assert rawvfio.msix_enable(opened.device, fds) == 0
        irqs = guest.msi_irqs(bdf)
        assert len(irqs) == 5
        lines = truth.proc_interrupts(Path("/proc"))
        chips = {lines[irq].chip for irq in irqs}
        if bench_kernel == "6.1":
            assert chips == {"IR-PCI-MSI"}
            hwirqs = sorted(int(lines[irq].hwirq_handler.split("-")[0]) for irq in irqs)
            devfn = int(bdf[-4:-2], 16) << 3 | int(bdf[-1])
            assert hwirqs == [(devfn << 11) | index for index in range(5)]
        else:
            assert chips == {f"IR-PCI-MSIX-{bdf}"}
        by_index = {int(lines[irq].actions.split("[")[1].split("]")[0]): irq for irq in irqs}
        irq3 = by_index[3]
        with open(f"/proc/irq/{irq3}/smp_affinity_list", "w") as affinity:
            affinity.write("1")
        before = lines[irq3].counts
        rawvfio.raise_e1000e_interrupt(opened.device, 3)
        assert wait_eventfd(fds[3]) == 1, "vector 3's eventfd counted the interrupt"
        after = truth.proc_interrupts(Path("/proc"))[irq3].counts
        assert after[1] == before[1] + 1 and after[0] == before[0], f"{before} -> {after}"
        rawvfio.quiesce_e1000e(opened.device)
        rawvfio.msix_disable(opened.device)
        assert guest.msi_irqs(bdf) == []
    finally:
        for fd in fds:
            os.close(fd)
        opened.close()


def wait_eventfd(fd: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return os.eventfd_read(fd)
        except BlockingIOError:
            time.sleep(0.02)
    return 0
