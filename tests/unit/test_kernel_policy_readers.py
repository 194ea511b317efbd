"""The kernel readers the reconciler uses: uevents, names of interfaces and disks, light IRQ reads, CPU load."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from msixd.kernel import cpuload, vectors
from msixd.kernel.roots import KernelRoots
from msixd.kernel.uevent import NETLINK_KOBJECT_UEVENT, UeventSocket, parse

UEVENTS = Path(__file__).resolve().parents[1] / "fixtures/uevents/6.12"


def test_a_pci_bind_uevent() -> None:
    event = parse((UEVENTS / "015-bind-bind-pci.bin").read_bytes())
    assert event is not None
    assert (event.action, event.subsystem, event.devpath) == ("bind", "pci", "/devices/pci0000:00/0000:00:0b.0")
    assert event.pci_slot == "0000:00:0b.0" and event.env["DRIVER"] == "nvme"


def test_an_unbind_and_a_block_device() -> None:
    unbind = parse((UEVENTS / "007-unbind-unbind-pci.bin").read_bytes())
    assert unbind is not None and (unbind.action, unbind.pci_slot) == ("unbind", "0000:00:0b.0")
    assert "DRIVER" not in unbind.env
    disk = parse((UEVENTS / "013-bind-add-block.bin").read_bytes())
    assert disk is not None and (disk.action, disk.subsystem, disk.pci_slot) == ("add", "block", None)
    assert vectors.bdf_in_path(disk.devpath) == "0000:00:0b.0"
    subsystem = parse((UEVENTS / "006-unbind-remove-nvme-subsystem.bin").read_bytes())
    assert subsystem is not None and vectors.bdf_in_path(subsystem.devpath) is None


@pytest.mark.parametrize("data", [b"libudev\0\xfe\xed\xca\xfe" + b"\0" * 30, b"", b"add", b"@/devices", b"x@y\0"])
def test_not_a_kernel_uevent(data: bytes) -> None:
    assert parse(data) is None


def test_the_socket_takes_only_the_kernels_datagrams() -> None:
    """A datagram from a process (netlink port id not 0) is dropped; the kernel's port id is 0."""
    try:
        listener = UeventSocket()
    except OSError as err:
        pytest.skip(f"no NETLINK_KOBJECT_UEVENT socket here: {err}")
    sender = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)
    data = (UEVENTS / "015-bind-bind-pci.bin").read_bytes()
    try:
        port = listener._sock.getsockname()[0]
        sender.sendto(data, (port, 0))
        assert listener.receive(2.0) is None, "a process's datagram is not a uevent"
        sender.sendto(data, (port, 0))  # it does arrive: receive() dropped it for its sender
        listener._sock.settimeout(2.0)
        received, (sender_port, _groups) = listener._sock.recvfrom(8192)
        assert received == data and sender_port != 0
    finally:
        sender.close()
        listener.close()


@pytest.fixture
def root(tree: Callable[[str], Path]) -> Path:
    return tree("host-6.18")


def test_interfaces_and_block_devices_from_the_class_links(root: Path) -> None:
    roots = KernelRoots.under(root)
    assert vectors.interfaces(roots) == {"0000:00:03.0": frozenset({"eth0"})}
    assert vectors.block_devices(roots) == {"0000:00:02.0": frozenset({"vda"})}


def test_nvme_multipath_disks_are_found_through_their_paths(tmp_path: Path) -> None:
    """A native-multipath namespace's disk lies under the subsystem; its paths under the controller."""
    sys = tmp_path / "sys"
    head = sys / "devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1"
    path = sys / "devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0c0n1"
    (head / "multipath").mkdir(parents=True)
    (head / "nvme0n1p1").mkdir()
    path.mkdir(parents=True)
    (head / "multipath/nvme0c0n1").symlink_to("../../../../../pci0000:00/0000:00:04.0/nvme/nvme0/nvme0c0n1")
    (sys / "class/block").mkdir(parents=True)
    (sys / "class/block/nvme0n1").symlink_to("../../devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1")
    (sys / "class/block/nvme0n1p1").symlink_to("../../devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1/nvme0n1p1")
    assert vectors.block_devices(KernelRoots.under(tmp_path)) == {"0000:00:04.0": frozenset({"nvme0n1", "nvme0n1p1"})}


def test_light_reads_of_a_vector(root: Path) -> None:
    roots = KernelRoots.under(root)
    assert vectors.msi_irq_numbers(roots, "0000:00:04.0") == {40, 41, 42, 43}
    handler = vectors.read_handler(roots, 41)
    assert handler is not None and (handler.chip_name, handler.hwirq, handler.actions) == (
        "PCI-MSIX-0000:00:04.0", 1, ("virtio3-rx",))
    assert vectors.read_affinity_raw(roots, 41) == b"0-1\n"
    assert vectors.parse_affinity(roots, 41, b"0-1\n") == {0, 1}
    assert vectors.affinity_writable(roots, 41) is True
    assert vectors.affinity_writable(roots, 36) is False, "a managed IRQ's file is 0444 since 6.12"
    shutil.rmtree(root / "proc/irq/41")
    assert vectors.read_affinity_raw(roots, 41) is None and vectors.affinity_writable(roots, 41) is None
    assert vectors.read_handler(roots, 9999) is None


def test_interrupt_time_per_online_cpu(root: Path) -> None:
    roots = KernelRoots.under(root)
    seconds = cpuload.interrupt_seconds(roots)
    assert seconds is not None and set(seconds) == {0, 1}
    stat = (root / "proc/stat").read_text().splitlines()
    cpu1 = [int(x) for x in next(line for line in stat if line.startswith("cpu1 ")).split()[1:]]
    # irq and softirq are the 6th and 7th columns, in USER_HZ (100 on Linux).
    assert seconds[1] == pytest.approx((cpu1[5] + cpu1[6]) / 100)


def test_interrupt_time_maps_entries_to_online_cpus(root: Path) -> None:
    """/proc/stat lists online CPUs only: with CPU 1 offline, its second line is CPU 2's."""
    (root / "sys/devices/system/cpu/online").write_text("0,2\n")
    (root / "proc/stat").write_text("cpu  0 0 0 0 0 3 3 0 0 0\ncpu0 0 0 0 0 0 1 1 0 0 0\ncpu2 0 0 0 0 0 2 2 0 0 0\n"
                                    "intr 0\n")
    assert cpuload.interrupt_seconds(KernelRoots.under(root)) == {0: 0.02, 2: 0.04}
    (root / "sys/devices/system/cpu/online").write_text("0-2\n")
    assert cpuload.interrupt_seconds(KernelRoots.under(root)) is None, "a CPU came or went: not to be trusted"
    (root / "proc/stat").unlink()
    assert cpuload.interrupt_seconds(KernelRoots.under(root)) is None
