"""The bench itself: the guest is the kernel it claims to be, with the devices it needs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.vm import guest

pytestmark = pytest.mark.vm


def test_guest_runs_the_requested_kernel(bench_kernel: str) -> None:
    assert os.uname().release.startswith(bench_kernel + ".") or os.uname().release.startswith(bench_kernel + "-")
    assert os.geteuid() == 0
    assert "msixd_bench=1" in Path("/proc/cmdline").read_text().split()


def test_guest_topology() -> None:
    assert os.cpu_count() == 2
    assert Path("/dev/vfio/vfio").exists(), "vfio-pci is loaded"
    for vendor, device, vectors in ((0x8086, 0x10D3, 5), (0x1B36, 0x0010, 2048), (0x1AF4, 0x1000, 6)):
        bdf = guest.find_device(vendor, device)
        assert Path(f"/sys/bus/pci/devices/{bdf}/iommu_group").is_symlink(), f"{bdf} has an IOMMU group"
        config = Path(f"/sys/bus/pci/devices/{bdf}/config").read_bytes()
        from msixd.kernel.pci import find_msix

        probe, cap = find_msix(config)
        assert cap is not None and cap.table_size == vectors, f"{bdf}: {probe} {cap}"


def test_e1000e_runs_unthrottled() -> None:
    """QEMU 7.2 aborts when an e1000e throttling timer fires after MSI-X is disabled: the driver must arm none."""
    import subprocess

    lines = [line for line in subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout.splitlines()
             if "Interrupt Throttling Rate" in line]
    assert lines and all(line.endswith("turned off") for line in lines), lines
