"""The read-only inventory against a real kernel's own truth, inside a bench guest.

6.1 puts MSI-X vectors in the global remapping domain (chip IR-PCI-MSI, hwirq
(dev_id << 11) | index); 6.12 gives every device its own domain (chip
IR-PCI-MSIX-<bdf>, hwirq = index). The inventory must get both right.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from msixd.errors import DeviceNotFound
from msixd.kernel.cpulist import parse_cpulist
from msixd.kernel.irq import IndexSource
from msixd.kernel.pci import MsixProbe
from msixd.kernel.roots import KernelRoots
from msixd.kernel.system import State
from msixd.service.model import DomainScheme, IrqMode
from msixd.service.services import Services
from tests import truth
from tests.vm import guest

pytestmark = pytest.mark.vm

E1000E = (0x8086, 0x10D3)
PER_DEVICE_DOMAINS = tuple(int(x) for x in os.uname().release.split(".")[:2]) >= (6, 2)


@pytest.fixture
def services(tmp_path: Path) -> Services:
    return Services.build(KernelRoots(), tmp_path / "state.json")


def check_against_proc(services: Services) -> int:
    """Every vector of every MSI-X device agrees with /proc/interrupts and /proc/irq. Returns vectors checked."""
    checked = 0
    for bdf, count in truth.msix_devices(Path("/sys")).items():
        device = services.inventory.get_device(bdf)
        lines = truth.proc_interrupts(Path("/proc"))
        assert len(device.vectors) == count
        for vector in device.vectors:
            if vector.irq in lines:
                line = lines[vector.irq]
                assert line.chip == vector.chip
                assert sum(line.counts) >= vector.total_count
                hwirq = int(line.hwirq_handler.split("-")[0])
                assert hwirq == vector.hwirq
            proc = Path(f"/proc/irq/{vector.irq}")
            if proc.is_dir():
                assert vector.affinity == parse_cpulist((proc / "smp_affinity_list").read_text())
            checked += 1
    return checked


def test_kernel_driver_vectors(services: Services) -> None:
    assert check_against_proc(services) > 0
    devices = services.inventory.list_devices()
    assert devices, "the bench has e1000e, nvme and virtio-net with MSI-X"
    for device in devices:
        assert device.pci.msix_probe is MsixProbe.PRESENT
        if device.vectors_allocated:
            assert device.domain is not None and device.domain.remapped
            scheme = DomainScheme.PER_DEVICE if PER_DEVICE_DOMAINS else DomainScheme.GLOBAL
            assert device.domain.scheme is scheme


@pytest.fixture
def vfio_e1000e(services: Services) -> Iterator[str]:
    bdf = guest.find_device(*E1000E)
    before = guest.driver_of(bdf)
    services.binding.bind(bdf)
    try:
        yield bdf
    finally:
        services.binding.release(bdf)
        services.owner.close_all()
        assert guest.driver_of(bdf) == before


def test_vfio_msix_vectors(services: Services, vfio_e1000e: str) -> None:
    services.owner.enable(vfio_e1000e, 5)
    device = services.inventory.get_device(vfio_e1000e)
    assert device.irq_mode is IrqMode.MSIX and device.vectors_allocated == 5
    assert device.pci.msix is not None and device.pci.msix.enabled and device.pci.msix.table_size == 5
    assert [v.index for v in device.vectors] == [0, 1, 2, 3, 4]
    for vector in device.vectors:
        assert vector.actions == (f"vfio-msix[{vector.index}]({vfio_e1000e})",)
        assert vector.index_source is IndexSource.ACTION
        assert vector.affinity_settable
        if PER_DEVICE_DOMAINS:
            assert vector.chip == f"IR-PCI-MSIX-{vfio_e1000e}" and vector.hwirq == vector.index
        else:
            assert vector.chip == "IR-PCI-MSI" and vector.hwirq is not None
            assert vector.hwirq & 0x7FF == vector.index  # (dev_id << 11) | index
    assert check_against_proc(services) >= 5

    domains = {d.name: d for d in services.inventory.list_domains()}
    if PER_DEVICE_DOMAINS:
        mine = domains[f"IR-PCI-MSIX-{vfio_e1000e}"]
        assert mine.scheme is DomainScheme.PER_DEVICE and mine.bdfs == (vfio_e1000e,)
        assert (mine.size, mine.mapped) == (5, 5)
    else:
        shared = domains["IR-PCI-MSI"]
        assert shared.scheme is DomainScheme.GLOBAL and vfio_e1000e in shared.bdfs
    assert all(d.parents[-1] == "VECTOR" and d.parents[0].startswith("INTEL-IR-") for d in domains.values())


def test_status_features(services: Services) -> None:
    features = services.inventory.status().features
    assert features.vfio.state is State.PRESENT
    assert features.vfio_pci.state is State.PRESENT
    assert features.iommu_groups.state is State.PRESENT
    assert features.interrupt_remapping.state is State.PRESENT
    assert features.per_device_msi_domains.state is (State.PRESENT if PER_DEVICE_DOMAINS else State.ABSENT)
    # Debian's kernels are built without CONFIG_GENERIC_IRQ_DEBUGFS (their config-* in /boot says so).
    assert features.debugfs_irq.state is not State.PRESENT


def test_a_removed_and_rescanned_device_is_read_afresh(services: Services, tmp_path: Path) -> None:
    """The fixed facts remembered for a device (its IDs, where its MSI-X capability, table and PBA
    are) belong to its sysfs identity: a remove and rescan gives the function a new directory
    (a new kernfs node, so a new inode, fs/kernfs/dir.c), and the answer after it is the one a
    reader remembering nothing gives, read from the device found again."""
    bdf = guest.find_device(*E1000E)
    driver = guest.driver_of(bdf)
    inventory = services.inventory
    before = inventory.get_device(bdf)
    remembered = inventory.devices.known(bdf)
    assert remembered is not None and before.pci.msix is not None

    Path(f"/sys/bus/pci/devices/{bdf}/remove").write_text("1")
    assert not Path(f"/sys/bus/pci/devices/{bdf}").exists()
    with pytest.raises(DeviceNotFound):
        inventory.get_device(bdf)
    assert inventory.devices.known(bdf) is None, "a function gone is forgotten"

    Path("/sys/bus/pci/rescan").write_text("1")
    deadline = time.monotonic() + 60
    while guest.driver_of(bdf) != driver and time.monotonic() < deadline:
        time.sleep(0.1)
    assert guest.driver_of(bdf) == driver, f"{bdf} is back on {driver}"

    after = inventory.get_device(bdf)
    relearnt = inventory.devices.known(bdf)
    assert relearnt is not None and relearnt.identity != remembered.identity
    fresh = Services.build(KernelRoots(), tmp_path / "fresh.json").inventory.get_device(bdf)
    assert after.pci == fresh.pci and after.vectors_allocated == fresh.vectors_allocated
    assert [(v.index, v.irq, v.chip, v.affinity) for v in after.vectors] == \
        [(v.index, v.irq, v.chip, v.affinity) for v in fresh.vectors]
    assert (after.pci.vendor_id, after.pci.device_id, after.pci.msix.table_size if after.pci.msix else None) == \
        (before.pci.vendor_id, before.pci.device_id, before.pci.msix.table_size)
    assert check_against_proc(services) > 0
