"""The few files the placement reconciler reads, fewer than an inventory does.

A reconcile pass looks at every vector a policy places, every few seconds, so
it reads only what placing needs: the device's msi_irqs/ listing (no mode
file per IRQ), an IRQ's chip, hwirq and handler names (no per-CPU counts,
which grow with the CPUs), and its smp_affinity_list. Which network
interfaces and block devices belong to a PCI function comes from the links in
/sys/class/net and /sys/class/block.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass

from msixd.errors import InvalidCpuList, KernelFormatError, ResourceExhausted
from msixd.kernel.cpulist import parse_cpulist
from msixd.kernel.files import U32_MAX, U64_MAX, decimal, list_dir, read_bytes, read_link_name, read_text
from msixd.kernel.pci import device_dir
from msixd.kernel.roots import KernelRoots

_BDF_IN_PATH = re.compile(r"(?<![0-9a-f])([0-9a-f]{4}:[0-9a-f]{2}:[01][0-9a-f]\.[0-7])(?=/|$)")


def msi_irq_numbers(roots: KernelRoots, bdf: str) -> frozenset[int]:
    """The Linux IRQs in the device's msi_irqs/, by name only."""
    found = (decimal(name, 1, U32_MAX) for name in list_dir(f"{device_dir(roots, bdf)}/msi_irqs"))
    return frozenset(number for number in found if number is not None)


@dataclass(frozen=True)
class Handler:
    """/sys/kernel/irq/<irq>/ without the counts: what names the vector."""

    irq: int
    chip_name: str
    hwirq: int | None
    actions: tuple[str, ...]


def read_handler(roots: KernelRoots, irq: int) -> Handler | None:
    """None when the IRQ descriptor is gone (freed between listing and reading)."""
    base = f"{roots.sysfs}/kernel/irq/{irq}"
    chip = read_text(f"{base}/chip_name")
    if chip is None:
        return None
    hwirq_text = read_text(f"{base}/hwirq") or ""
    hwirq = decimal(hwirq_text, 0, U64_MAX) if hwirq_text else None
    if hwirq_text and hwirq is None:
        raise KernelFormatError(f"{base}/hwirq", hwirq_text, "expected a decimal number below 2^64")
    actions = read_text(f"{base}/actions") or ""
    return Handler(irq, chip, hwirq, tuple(a for a in actions.split(",") if a))


def affinity_path(roots: KernelRoots, irq: int) -> str:
    return f"{roots.procfs}/irq/{irq}/smp_affinity_list"


def read_affinity_raw(roots: KernelRoots, irq: int) -> bytes | None:
    """smp_affinity_list as the kernel prints it (%*pbl and a newline); None without /proc/irq/<irq>."""
    return read_bytes(affinity_path(roots, irq))


def changed_affinities(roots: KernelRoots, expected: Sequence[tuple[int, bytes | None]]) -> list[int]:
    """The IRQs whose smp_affinity_list is not what is expected (the text without its newline; None:
    no /proc/irq/<irq>, no handler requested yet).

    The drift check of every placed vector, every few seconds: one open, read and close per IRQ,
    relative to one descriptor of /proc/irq, and nothing parsed when the text is as expected.
    """
    changed = []
    opened, read, close = os.open, os.read, os.close
    flags = os.O_RDONLY | os.O_CLOEXEC
    try:
        directory = opened(f"{roots.procfs}/irq", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return [irq for irq, text in expected if text is not None]
    try:
        for irq, text in expected:
            try:
                fd = opened(f"{irq}/smp_affinity_list", flags, dir_fd=directory)
            except FileNotFoundError:
                if text is not None:
                    changed.append(irq)
                continue
            try:
                data = read(fd, 4096)
            except OSError:
                data = b""
            finally:
                close(fd)
            if text is None or (data != text and data.rstrip(b"\n") != text):
                changed.append(irq)
    except OSError as err:
        if err.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM):
            raise ResourceExhausted(f"cannot read {roots.procfs}/irq: {os.strerror(err.errno)}") from err
        raise
    finally:
        close(directory)
    return changed


def parse_affinity(roots: KernelRoots, irq: int, raw: bytes) -> frozenset[int]:
    text = raw.decode("ascii", "replace").strip()
    try:
        return parse_cpulist(text)
    except InvalidCpuList as err:
        raise KernelFormatError(affinity_path(roots, irq), text, err.reason) from None


def affinity_writable(roots: KernelRoots, irq: int) -> bool | None:
    """Whether smp_affinity_list may be written (0444 since 6.12 for IRQs the kernel manages);
    None without /proc/irq/<irq>."""
    try:
        return bool(os.stat(affinity_path(roots, irq)).st_mode & stat.S_IWUSR)
    except FileNotFoundError:
        return None


def driver_name(roots: KernelRoots, bdf: str) -> str | None:
    """The driver bound to the function (its driver link's last component), or None."""
    return read_link_name(f"{device_dir(roots, bdf)}/driver")


def bdf_in_path(path: str) -> str | None:
    """The PCI function deepest in a sysfs device path, if the path is under one."""
    found = _BDF_IN_PATH.findall(path)
    return found[-1] if found else None


def interfaces(roots: KernelRoots) -> dict[str, frozenset[str]]:
    """PCI function -> its network interfaces' names (/sys/class/net/<name> links into the
    function's directory; virtual interfaces have no function)."""
    base = f"{roots.sysfs}/class/net"
    by_bdf: dict[str, set[str]] = {}
    for name in list_dir(base):
        try:
            target = os.readlink(f"{base}/{name}")
        except OSError:
            continue  # gone meanwhile
        bdf = bdf_in_path(target)
        if bdf is not None:
            by_bdf.setdefault(bdf, set()).add(name)
    return {bdf: frozenset(names) for bdf, names in by_bdf.items()}


def block_devices(roots: KernelRoots) -> dict[str, frozenset[str]]:
    """PCI function -> the block devices (and partitions) it serves.

    A disk's directory lies under its controller's function (nvme0n1 under
    .../0000:00:04.0/nvme/nvme0, vda under .../virtio2/block), except an NVMe
    namespace with native multipath (CONFIG_NVME_MULTIPATH, on in Debian's
    kernels): its disk lies under the subsystem, and its multipath/ directory
    links the per-controller paths, which lie under their functions
    (drivers/nvme/host/multipath.c, nvme_mpath_add_disk). A partition's parent
    directory is its disk.
    """
    base = f"{roots.sysfs}/class/block"
    by_bdf: dict[str, set[str]] = {}
    for name in list_dir(base):
        link = f"{base}/{name}"
        try:
            target = os.readlink(link)
        except OSError:
            continue
        bdf = bdf_in_path(target)
        if bdf is not None:
            by_bdf.setdefault(bdf, set()).add(name)
            continue
        disk = os.path.realpath(link)
        for directory in (disk, os.path.dirname(disk)):
            paths = list_dir(f"{directory}/multipath")
            for path in paths:
                path_bdf = bdf_in_path(os.path.realpath(f"{directory}/multipath/{path}"))
                if path_bdf is not None:
                    by_bdf.setdefault(path_bdf, set()).add(name)
            if paths:
                break
    return {bdf: frozenset(names) for bdf, names in by_bdf.items()}
