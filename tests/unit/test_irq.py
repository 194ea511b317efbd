from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from msixd.errors import KernelFormatError
from msixd.kernel.irq import IndexSource, msi_irqs, read_proc_irq, read_sys_irq, vector_index
from msixd.kernel.roots import KernelRoots


@pytest.mark.parametrize(
    ("bdf", "chip", "hwirq", "actions", "expected"),
    [
        # 6.12 guest, per-device remapped domain: hwirq is the index (msi_create_device_irq_domain()).
        ("0000:00:09.0", "IR-PCI-MSIX-0000:00:09.0", 3, (), (3, IndexSource.HWIRQ)),
        # this host, per-device domain without remapping.
        ("0000:00:01.0", "PCI-MSIX-0000:00:01.0", 4, ("virtio0-reporting_vq",), (4, IndexSource.HWIRQ)),
        # 6.1 guest, global domain: (dev_id << 11) | index, 147456..147460 for devfn 0x48.
        ("0000:00:09.0", "IR-PCI-MSI", 147458, (), (2, IndexSource.GLOBAL_HWIRQ)),
        # The vfio action names the index whatever the domain.
        ("0000:00:09.0", "IR-PCI-MSI", 147456, ("vfio-msix[4](0000:00:09.0)",), (4, IndexSource.ACTION)),
        # A global hwirq of another device is not trusted.
        ("0000:00:0a.0", "IR-PCI-MSI", 147458, (), None),
        # A per-device chip of another device is not trusted.
        ("0000:00:0a.0", "PCI-MSIX-0000:00:09.0", 1, (), None),
        ("0000:00:09.0", "IO-APIC", 5, (), None),
        ("0000:00:09.0", "PCI-MSIX-0000:00:09.0", None, (), None),
    ],
)
def test_vector_index(bdf: str, chip: str, hwirq: int | None, actions: tuple[str, ...], expected: object) -> None:
    assert vector_index(bdf, chip, hwirq, actions) == expected


def test_msi_irqs(host_roots: KernelRoots) -> None:
    assert msi_irqs(host_roots, "0000:00:01.0") == {28: "msix", 29: "msix", 30: "msix", 31: "msix", 32: "msix"}
    assert msi_irqs(host_roots, "0000:00:00.0") == {}


def test_read_sys_irq(host_roots: KernelRoots) -> None:
    irq = read_sys_irq(host_roots, 36)
    assert irq is not None
    assert (irq.chip_name, irq.hwirq, irq.actions, irq.type) == ("PCI-MSIX-0000:00:02.0", 1, ("virtio1-req.0",), "edge")
    assert len(irq.per_cpu_count) == 2


def test_managed_irq_is_not_settable(host_roots: KernelRoots) -> None:
    """IRQ 36 is a virtio-blk queue: managed affinity, smp_affinity_list 0444 since 6.12."""
    managed = read_proc_irq(host_roots, 36)
    free = read_proc_irq(host_roots, 35)
    assert managed is not None and free is not None
    assert not managed.settable and "manages" in managed.reason
    assert free.settable and free.reason == ""


def test_missing_irq(host_roots: KernelRoots) -> None:
    assert read_sys_irq(host_roots, 99999) is None
    assert read_proc_irq(host_roots, 99999) is None


def test_malformed_counts_are_a_typed_error(tree: Callable[[str], Path]) -> None:
    root = tree("host-6.18")
    (root / "sys/kernel/irq/28/per_cpu_count").write_text("0,x\n")
    with pytest.raises(KernelFormatError, match="per_cpu_count"):
        read_sys_irq(KernelRoots.under(root), 28)
