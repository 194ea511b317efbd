"""Answers reflect the kernel after the request, though the inventory remembers fixed facts.

What it remembers (IDs, where the MSI-X capability, table and PBA are) is
dropped when the device's sysfs identity changes; everything else is read for
every answer. Each test changes a captured tree between two calls of the same
Inventory and looks for the change in the second answer.
"""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from msixd.errors import DeviceNotFound
from msixd.kernel.pci import MsixProbe
from msixd.kernel.roots import KernelRoots
from msixd.service.inventory import Inventory
from msixd.service.model import IrqMode
from tests.fixturetree import FIXTURES

BDF = "0000:00:01.0"  # host-6.18: virtio, MSI-X at 0x98, IRQs 28-32
MSIX = 0x98


def device(root: Path, bdf: str = BDF) -> Path:
    return root / "sys/bus/pci/devices" / bdf


def poke(config: Path, offset: int, fmt: str, value: int) -> None:
    data = bytearray(config.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    config.write_bytes(bytes(data))


def test_live_state_changed_between_two_calls_is_in_the_second_answer(tree: Callable[[str], Path]) -> None:
    root = tree("host-6.18")
    inventory = Inventory(KernelRoots.under(root))
    before = inventory.get_device(BDF)
    assert before.pci.msix is not None and before.pci.msix.enabled and not before.pci.msix.function_masked
    assert before.pci.driver == "virtio-pci" and [v.irq for v in before.vectors] == [28, 29, 30, 31, 32]

    base = device(root)
    (control,) = struct.unpack_from("<H", (base / "config").read_bytes(), MSIX + 2)
    poke(base / "config", MSIX + 2, "<H", (control & ~0x8000 | 0x4000) & ~0x7FF | 7)  # disabled, masked, 8 entries
    (base / "driver").unlink()
    (base / "numa_node").write_text("1\n")
    (base / "local_cpulist").write_text("1\n")
    (base / "msi_irqs/32").unlink()
    irq29 = root / "sys/kernel/irq/29"
    (irq29 / "actions").write_text("\n")
    (irq29 / "per_cpu_count").write_text("7,11\n")
    proc29 = root / "proc/irq/29"
    (proc29 / "smp_affinity_list").write_text("0\n")
    (proc29 / "effective_affinity_list").write_text("0\n")
    (proc29 / "smp_affinity_list").chmod(0o444)

    after = inventory.get_device(BDF)
    assert after.pci.msix is not None
    assert (after.pci.msix.enabled, after.pci.msix.function_masked, after.pci.msix.table_size) == (False, True, 8)
    assert after.pci.driver is None and after.pci.numa_node == 1 and after.pci.local_cpus == {1}
    assert after.vectors_allocated == 4 and [v.irq for v in after.vectors] == [28, 29, 30, 31]
    vector = next(v for v in after.vectors if v.irq == 29)
    assert vector.actions == () and vector.per_cpu_count == (7, 11) and vector.total_count == 18
    assert vector.affinity == {0} and vector.effective_affinity == {0}
    assert not vector.affinity_settable and "read-only" in vector.affinity_reason


def test_msi_irqs_changing_mode_is_in_the_next_answer(tree: Callable[[str], Path]) -> None:
    root = tree("host-6.18")
    inventory = Inventory(KernelRoots.under(root))
    assert inventory.get_device(BDF).irq_mode is IrqMode.MSIX
    for entry in (device(root) / "msi_irqs").iterdir():
        entry.write_text("msi\n")
    assert inventory.get_device(BDF).irq_mode is IrqMode.MSI
    for entry in list((device(root) / "msi_irqs").iterdir()):
        entry.unlink()
    after = inventory.get_device(BDF)
    assert (after.irq_mode, after.vectors_allocated, after.vectors, after.domain) == (IrqMode.NONE, 0, (), None)


def replace_device(root: Path, bdf: str, edit: Callable[[Path], None]) -> None:
    """Remove the device's directory and create it again, edited (a new inode: what a hot
    removal followed by a rescan gives)."""
    base = device(root, bdf)
    copy = root / "replacement"
    shutil.copytree(base, copy, symlinks=True)
    edit(copy)
    shutil.rmtree(base)
    copy.rename(base)


def test_a_removed_and_recreated_device_is_read_anew(tree: Callable[[str], Path]) -> None:
    root = tree("host-6.18")
    inventory = Inventory(KernelRoots.under(root))
    before = inventory.get_device(BDF)
    known = inventory.devices.known(BDF)
    assert known is not None and known.identity == os.stat(device(root)).st_ino
    assert (before.pci.vendor_id, before.pci.device_id) == (0x1AF4, 0x1045)

    def other_device(base: Path) -> None:
        """Another function at the same address: new IDs, and MSI-X moved from 0x98 to 0x40
        with its table in BAR 2."""
        (base / "vendor").write_text("0x8086\n")
        (base / "device").write_text("0x10d3\n")
        config = bytearray((base / "config").read_bytes())
        config[0x34] = 0x40
        config[0x40:0x4C] = struct.pack("<BBHII", 0x11, 0x00, 0x8004, 0x3002, 0x3802)
        (base / "config").write_bytes(bytes(config))

    replace_device(root, BDF, other_device)
    after = inventory.get_device(BDF)
    assert (after.pci.vendor_id, after.pci.device_id) == (0x8086, 0x10D3)
    assert after.pci.msix is not None
    assert (after.pci.msix.offset, after.pci.msix.table_size, after.pci.msix.table_bir) == (0x40, 5, 2)
    assert (after.pci.msix.table_offset, after.pci.msix.pba_offset) == (0x3000, 0x3800)
    renewed = inventory.devices.known(BDF)
    assert renewed is not None and renewed.identity == os.stat(device(root)).st_ino != known.identity


def test_a_removed_device_is_not_found_and_forgotten(tree: Callable[[str], Path]) -> None:
    root = tree("host-6.18")
    inventory = Inventory(KernelRoots.under(root))
    inventory.get_device(BDF)
    assert inventory.devices.known(BDF) is not None
    away = root / "removed"
    device(root).rename(away)
    with pytest.raises(DeviceNotFound):
        inventory.get_device(BDF)
    assert inventory.devices.known(BDF) is None
    assert BDF not in [d.pci.bdf for d in inventory.list_devices()]
    away.rename(device(root))  # the same directory back: same inode, and the answer is whole again
    assert inventory.get_device(BDF).pci.vendor_id == 0x1AF4


def test_a_listing_forgets_devices_that_left(tree: Callable[[str], Path]) -> None:
    root = tree("host-6.18")
    inventory = Inventory(KernelRoots.under(root))
    inventory.list_devices(all_devices=True)
    assert inventory.devices.known("0000:00:03.0") is not None
    shutil.rmtree(device(root, "0000:00:03.0"))
    inventory.list_devices()
    assert inventory.devices.known("0000:00:03.0") is None


def test_a_device_losing_its_msix_capability_on_a_rescan(tree: Callable[[str], Path]) -> None:
    root = tree("host-6.18")
    inventory = Inventory(KernelRoots.under(root))
    assert inventory.get_device(BDF).pci.msix_probe is MsixProbe.PRESENT

    def without_capabilities(base: Path) -> None:
        poke(base / "config", 0x06, "<H", 0)

    replace_device(root, BDF, without_capabilities)
    after = inventory.get_device(BDF)
    assert (after.pci.msix_probe, after.pci.msix) == (MsixProbe.ABSENT, None)
    assert BDF not in [d.pci.bdf for d in inventory.list_devices()]


def install_debugfs(root: Path, texts: dict[int, str]) -> None:
    irqs = root / "sys/kernel/debug/irq/irqs"
    irqs.mkdir(parents=True)
    for irq, sample in texts.items():
        (irqs / str(irq)).write_text((FIXTURES / "debugfs-irqs" / sample).read_text())


@pytest.mark.parametrize("managed", [28, 30])
def test_debugfs_marks_managed_vectors_whichever_irq_it_is(tree: Callable[[str], Path], managed: int) -> None:
    """With CONFIG_GENERIC_IRQ_DEBUGFS, an IRQ flagged IRQD_AFFINITY_MANAGED is not settable even where
    /proc shows 0644 (kernels before 6.12); the first IRQ's file also names the domain."""
    root = tree("host-6.18")
    texts = {irq: "x86-global-pci-msi.txt" for irq in (28, 29, 30, 31, 32)}
    texts[managed] = "arm64-its-managed.txt"
    install_debugfs(root, texts)
    inventory = Inventory(KernelRoots.under(root))
    for _ in range(2):
        found = inventory.get_device(BDF)
        assert [v.irq for v in found.vectors if not v.affinity_settable] == [managed]
        assert "IRQD_AFFINITY_MANAGED" in next(v for v in found.vectors if v.irq == managed).affinity_reason
        assert found.domain is not None and found.domain.name == (
            "PCI-MSI-3" if managed != 28 else ":soc@0:interrupt-controller@0e001000:its@0e050000-3")
    # debugfs unmounted between two calls: the next answer no longer has it
    shutil.rmtree(root / "sys/kernel/debug/irq")
    again = inventory.get_device(BDF)
    assert all(v.affinity_settable for v in again.vectors)
    assert again.domain is not None and again.domain.name == f"PCI-MSIX-{BDF}"
