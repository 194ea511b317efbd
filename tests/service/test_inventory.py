"""The inventory against independent readings of the same captured trees."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from msixd.errors import DeviceNotFound, InvalidBdf
from msixd.kernel.cpulist import parse_cpulist
from msixd.kernel.irq import IndexSource
from msixd.kernel.pci import MsixProbe
from msixd.kernel.roots import KernelRoots
from msixd.kernel.system import State
from msixd.service.inventory import Inventory
from msixd.service.model import DomainScheme, DomainSource, IrqMode
from tests import truth
from tests.fixturetree import fixture_names

CAPTURED = [name for name in fixture_names()]


@pytest.mark.parametrize("name", CAPTURED)
def test_every_vector_matches_proc_interrupts_and_proc_irq(tree: Callable[[str], Path], name: str) -> None:
    root = tree(name)
    roots = KernelRoots.under(root)
    lines = truth.proc_interrupts(roots.procfs)
    inventory = Inventory(roots)
    expected = truth.msix_devices(roots.sysfs)
    assert {d.pci.bdf: d.vectors_allocated for d in inventory.list_devices() if d.vectors_allocated} == expected
    for bdf in expected:
        device = inventory.get_device(bdf)
        assert len(device.vectors) == expected[bdf]
        for vector in device.vectors:
            proc = roots.procfs / "irq" / str(vector.irq)
            if vector.irq in lines:  # listed while it has an action
                line = lines[vector.irq]
                assert line.chip == vector.chip
                # The capture reads /proc/interrupts last: a busy IRQ may be ahead there.
                assert sum(line.counts) >= vector.total_count
                if any(a.startswith("vfio-msix") for a in vector.actions):
                    assert sum(line.counts) == vector.total_count
                # "<hwirq>-<handler>": the per-device hwirq is the index itself
                if vector.index_source is IndexSource.HWIRQ:
                    assert line.hwirq_handler.split("-")[0] == str(vector.index)
            if proc.is_dir():
                assert vector.affinity == parse_cpulist((proc / "smp_affinity_list").read_text())
                assert vector.effective_affinity == parse_cpulist((proc / "effective_affinity_list").read_text())
        indexes = [v.index for v in device.vectors]
        assert indexes == sorted(set(indexes)), "indexes are unique and ordered"


def test_host_listing(host_roots: KernelRoots) -> None:
    devices = Inventory(host_roots).list_devices()
    assert [d.pci.bdf for d in devices] == [f"0000:00:0{i}.0" for i in range(1, 6)]
    for device in devices:
        assert device.irq_mode is IrqMode.MSIX
        assert device.pci.msix is not None and device.pci.msix.enabled
        assert device.vectors_allocated <= device.pci.msix.table_size
        assert device.domain is not None
        assert device.domain.name == f"PCI-MSIX-{device.pci.bdf}"
        assert device.domain.scheme is DomainScheme.PER_DEVICE
        assert device.domain.source is DomainSource.INFERRED
        assert device.vectors == ()  # a listing is a summary unless asked


def test_all_devices_includes_the_host_bridge(host_roots: KernelRoots) -> None:
    devices = Inventory(host_roots).list_devices(all_devices=True)
    bridge = [d for d in devices if d.pci.bdf == "0000:00:00.0"]
    assert bridge and bridge[0].pci.msix_probe is MsixProbe.ABSENT and bridge[0].domain is None


def test_unprivileged_tree_reports_unreadable_but_still_counts_vectors(tree: Callable[[str], Path]) -> None:
    inventory = Inventory(KernelRoots.under(tree("host-6.18-unprivileged")))
    devices = inventory.list_devices()
    assert [d.pci.bdf for d in devices] == [f"0000:00:0{i}.0" for i in range(1, 6)]
    for device in devices:
        assert device.pci.msix_probe is MsixProbe.UNREADABLE and device.pci.msix is None
    assert sum(d.vectors_allocated for d in devices) == 16
    # The host bridge's status register, inside the visible 64 bytes, says it has
    # no capability list at all: that absence is known even without privilege.
    bridge = inventory.list_devices(all_devices=True)[0]
    assert bridge.pci.bdf == "0000:00:00.0" and bridge.pci.msix_probe is MsixProbe.ABSENT


def test_get_device_accepts_short_bdf_and_rejects_bad_ones(host_roots: KernelRoots) -> None:
    inventory = Inventory(host_roots)
    assert inventory.get_device("00:04.0").pci.bdf == "0000:00:04.0"
    with pytest.raises(InvalidBdf):
        inventory.get_device("../../x")
    with pytest.raises(DeviceNotFound):
        inventory.get_device("0000:00:1f.7")


def test_managed_vector_is_reported_not_movable(host_roots: KernelRoots) -> None:
    vectors = Inventory(host_roots).get_device("0000:00:02.0").vectors
    assert [(v.index, v.irq, v.affinity_settable) for v in vectors] == [(0, 35, True), (1, 36, False)]
    assert "manages" in vectors[1].affinity_reason


def test_irq_vanishing_mid_listing_is_skipped(tree: Callable[[str], Path]) -> None:
    root = tree("host-6.18")
    for name in ("chip_name", "hwirq", "actions", "per_cpu_count", "type", "name", "wakeup"):
        (root / f"sys/kernel/irq/30/{name}").unlink()
    device = Inventory(KernelRoots.under(root)).get_device("0000:00:01.0")
    assert [v.irq for v in device.vectors] == [28, 29, 31, 32]
    assert device.vectors_allocated == 5  # msi_irqs still lists it


def test_malformed_irq_skips_the_vector_not_the_listing(tree: Callable[[str], Path]) -> None:
    root = tree("host-6.18")
    (root / "proc/irq/29/smp_affinity_list").write_text("3-1\n")
    device = Inventory(KernelRoots.under(root)).get_device("0000:00:01.0")
    assert [v.irq for v in device.vectors] == [28, 30, 31, 32]


def test_domains_on_host(host_roots: KernelRoots) -> None:
    domains = Inventory(host_roots).list_domains()
    assert [d.name for d in domains] == [f"PCI-MSIX-0000:00:0{i}.0" for i in range(1, 6)]
    first = domains[0]
    assert (first.bdfs, first.size, first.mapped, first.parents) == (("0000:00:01.0",), 5, 5, ("VECTOR",))
    assert not first.remapped and first.source is DomainSource.INFERRED


def test_status_on_host(host_roots: KernelRoots) -> None:
    status = Inventory(host_roots, clock=iter([100.0, 142.5]).__next__).status()
    assert status.kernel_release.startswith("6.18")
    assert status.uptime_seconds == 42.5
    features = status.features
    assert features.vfio.state is State.ABSENT
    assert features.iommu_groups.state is State.ABSENT
    assert features.per_device_msi_domains.state is State.PRESENT
    assert features.interrupt_remapping.state is State.ABSENT
    assert features.debugfs_irq.state is State.UNKNOWN  # not mounted on the captured host
    assert status.cpus.online == {0, 1}


@pytest.mark.parametrize(
    ("name", "scheme", "chip"),
    [
        ("guest-6.1", DomainScheme.GLOBAL, "IR-PCI-MSI"),
        ("guest-6.12", DomainScheme.PER_DEVICE, "IR-PCI-MSIX-0000:00:0a.0"),
    ],
)
def test_guest_trees_with_vfio_vectors(tree: Callable[[str], Path], name: str, scheme: DomainScheme, chip: str) -> None:
    """Captured with the e1000e (00:0a.0) and nvme on vfio-pci, 5 and 16 vectors, e1000e vector 3 on CPU 1."""
    inventory = Inventory(KernelRoots.under(tree(name)))
    e1000e = inventory.get_device("0000:00:0a.0")
    assert e1000e.pci.driver == "vfio-pci" and e1000e.pci.iommu_group is not None
    assert e1000e.pci.msix is not None and (e1000e.pci.msix.table_size, e1000e.pci.msix.enabled) == (5, True)
    assert e1000e.domain is not None and (e1000e.domain.scheme, e1000e.domain.name) == (scheme, chip)
    assert e1000e.domain.remapped
    assert [(v.index, v.index_source) for v in e1000e.vectors] == [(i, IndexSource.ACTION) for i in range(5)]
    assert {v.index: v.affinity for v in e1000e.vectors}[3] == {1}
    nvme = next(d for d in inventory.list_devices() if d.pci.vendor_id == 0x1B36 and d.pci.device_id == 0x0010)
    assert nvme.pci.driver == "vfio-pci" and nvme.vectors_allocated == 16
    assert nvme.pci.msix is not None and nvme.pci.msix.table_size == 64
    domains = {d.name: d for d in inventory.list_domains()}
    if scheme is DomainScheme.GLOBAL:
        assert {"0000:00:0a.0", nvme.pci.bdf} <= set(domains["IR-PCI-MSI"].bdfs)
    else:
        assert (domains[chip].size, domains[chip].mapped) == (5, 5)
    assert all(d.parents == ("INTEL-IR-0", "VECTOR") for d in domains.values())
    status = inventory.status()
    per_device = State.PRESENT if scheme is DomainScheme.PER_DEVICE else State.ABSENT
    assert status.features.per_device_msi_domains.state is per_device
    assert status.features.dynamic_msix.state is (State.ABSENT if name == "guest-6.1" else State.UNKNOWN)
    assert status.features.vfio.state is State.PRESENT and status.features.iommu_groups.state is State.PRESENT
