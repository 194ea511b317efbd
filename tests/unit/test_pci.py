from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from msixd.errors import DeviceNotFound, InvalidBdf
from msixd.kernel.pci import MsixProbe, find_msix, parse_bdf, pci_dev_id, read_device
from msixd.kernel.roots import KernelRoots
from tests.fixturetree import FIXTURES


@pytest.mark.parametrize(
    ("text", "bdf"),
    [
        ("0000:00:09.0", "0000:00:09.0"),
        ("00:09.0", "0000:00:09.0"),
        ("0000:3B:1F.7", "0000:3b:1f.7"),
        (" 01:00.1 ", "0000:01:00.1"),
    ],
)
def test_parse_bdf(text: str, bdf: str) -> None:
    assert parse_bdf(text) == bdf


@pytest.mark.parametrize(
    "text",
    ["", "../../x", "0000:00:09", "0000:00:20.0", "0000:00:09.8", "0000:00:09.0/../..", "x" * 4096, "0000:00:09.0\n1"],
)
def test_parse_bdf_rejects(text: str) -> None:
    with pytest.raises(InvalidBdf):
        parse_bdf(text)


def test_pci_dev_id() -> None:
    assert pci_dev_id("0000:00:09.0") == 0x48  # an e1000e seen on 6.1 at 00:09.0: hwirq 147456 = 0x48 << 11
    assert pci_dev_id("0000:32:00.0") == 0x3200


def _config(tree: str, bdf: str) -> bytes:
    return (FIXTURES / tree / "sys/bus/pci/devices" / bdf / "config").read_bytes()


def test_msix_capability_of_a_captured_virtio_device() -> None:
    probe, cap = find_msix(_config("host-6.18", "0000:00:01.0"))
    assert probe is MsixProbe.PRESENT and cap is not None
    # What `lspci -vv` decodes from the same config space on the captured host: "[98] MSI-X: Enable+
    # Count=5 Masked-", "Vector table: BAR=0 offset=00008000", "PBA: BAR=0 offset=00048000".
    assert (cap.offset, cap.table_size, cap.enabled, cap.function_masked) == (0x98, 5, True, False)
    assert (cap.table_bir, cap.table_offset, cap.pba_bir, cap.pba_offset) == (0, 0x8000, 0, 0x48000)


def test_host_bridge_has_no_msix() -> None:
    assert find_msix(_config("host-6.18", "0000:00:00.0")) == (MsixProbe.ABSENT, None)


def test_unprivileged_config_is_unreadable_not_absent() -> None:
    """Without CAP_SYS_ADMIN the kernel shows 64 bytes; the capability list lies beyond."""
    config = _config("host-6.18-unprivileged", "0000:00:01.0")
    assert len(config) == 64
    assert find_msix(config) == (MsixProbe.UNREADABLE, None)


def test_capability_loop_ends() -> None:
    config = bytearray(_config("host-6.18", "0000:00:00.0"))
    config[0x06] |= 0x10
    config[0x34] = 0x40
    config[0x40:0x42] = bytes([0x09, 0x40])  # a vendor capability pointing at itself
    assert find_msix(bytes(config)) == (MsixProbe.ABSENT, None)


def test_read_device(host_roots: KernelRoots) -> None:
    device = read_device(host_roots, "0000:00:03.0")
    assert (device.vendor_id, device.device_id, device.class_code) == (0x1AF4, 0x1041, 0x020000)
    assert device.driver == "virtio-pci"
    assert device.iommu_group is None
    assert device.local_cpus == {0, 1}
    assert device.msix is not None and device.msix.table_size == 3


def test_read_missing_device(host_roots: KernelRoots) -> None:
    with pytest.raises(DeviceNotFound):
        read_device(host_roots, "0000:00:1f.7")


def test_device_vanishing_keeps_its_name(tree: Callable[[str], Path]) -> None:
    root = tree("host-6.18")
    (root / "sys/bus/pci/devices/0000:00:03.0/config").unlink()
    with pytest.raises(DeviceNotFound, match="0000:00:03.0"):
        read_device(KernelRoots.under(root), "0000:00:03.0")
