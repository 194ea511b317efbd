"""The floor: the fewest reads the kernel requires for each answer msixd gives, with bare os calls.

A GetDevice answer (and each device of an inventory) carries the function's
IDs, its MSI-X capability, driver, IOMMU group, NUMA node and local CPUs, its
IRQs and their mode, and for every IRQ its chip, hwirq, handlers, type,
affinity (and whether it can be set), effective affinity, node and per-CPU
counts. The least a reader can do to give it:

- the function's identity: one stat(2) of its sysfs directory (the inode
  changes when it is removed and found again);
- what cannot change while the identity holds (the IDs as the kernel shows them,
  where the MSI-X capability is, its Table and PBA registers): read once per
  identity, with the capability list walked in small preads (Status, the
  capability pointer, two bytes per capability, then the MSI-X registers);
- what can, on every answer: Message Control (one 2-byte pread: enable, mask,
  table size), the driver and iommu_group links, numa_node, local_cpulist,
  the msi_irqs/ listing and one of its files (the mode is the device's, not
  the IRQ's), the first IRQ's debugfs file (it names the domain; a failed open
  where debugfs has no IRQ files), and per IRQ five /sys/kernel/irq/<irq> files
  and three /proc/irq/<irq> files, the affinity list with fstat(2) for its
  mode (a debugfs file more per settable IRQ where debugfs has them), and the
  eventfd of each vector msixd owns.

`warm` remembers the fixed facts per identity, as msixd does: the floor for an
answer to a caller who asks again. `cold` remembers nothing: the floor for the
first answer. Neither parses anything it does not need to find the next file.
"""

from __future__ import annotations

import os

from msixd.kernel.roots import KernelRoots

_ABSENT, _UNREADABLE = -1, -2
_CHUNK = 65536


def _read(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, _CHUNK)
    except OSError:
        return None
    finally:
        os.close(fd)


def _pread(path: str, size: int, offset: int) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.pread(fd, size, offset)
    except OSError:
        return None
    finally:
        os.close(fd)


def _read_with_mode(path: str) -> int | None:
    """Read the file and return its st_mode (from fstat on the open file)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        mode = os.fstat(fd).st_mode
        os.read(fd, _CHUNK)
        return mode
    except OSError:
        return None
    finally:
        os.close(fd)


def _readlink(path: str) -> None:
    try:
        os.readlink(path)
    except OSError:
        pass


class Floor:
    def __init__(self, roots: KernelRoots, remember: bool = True,
                 eventfds: dict[str, list[int]] | None = None) -> None:
        self.sysfs, self.procfs, self.debugfs = str(roots.sysfs), str(roots.procfs), str(roots.debugfs)
        self.remember = remember
        self.eventfds = eventfds or {}
        self.known: dict[str, tuple[int, int]] = {}  # bdf -> (identity, MSI-X offset or _ABSENT/_UNREADABLE)

    def _fixed(self, base: str, identity: int) -> int:
        """Read what cannot change: the IDs, then walk the capability list to MSI-X."""
        for name in ("vendor", "device", "class", "subsystem_vendor", "subsystem_device"):
            _read(f"{base}/{name}")
        config = f"{base}/config"
        status = _pread(config, 2, 0x06)
        offset = _UNREADABLE
        if status is not None and len(status) == 2:
            offset = _ABSENT
            if status[0] & 0x10:
                head = _pread(config, 1, 0x34)
                pointer = head[0] & 0xFC if head else 0
                offset = _ABSENT if head else _UNREADABLE
                for _ in range(48):
                    if pointer == 0:
                        break
                    header = _pread(config, 2, pointer)
                    if header is None or len(header) < 2:
                        offset = _UNREADABLE
                        break
                    if header[0] == 0x11:
                        registers = _pread(config, 8, pointer + 4)
                        offset = pointer if registers is not None and len(registers) == 8 else _UNREADABLE
                        break
                    pointer = header[1] & 0xFC
        if self.remember:
            self.known[base.rsplit("/", 1)[1]] = (identity, offset)
        return offset

    def device(self, bdf: str, vectors: bool = True, msix_only: bool = False) -> None:
        base = f"{self.sysfs}/bus/pci/devices/{bdf}"
        try:
            identity = os.stat(base).st_ino
        except OSError:
            return
        known = self.known.get(bdf)
        offset = known[1] if known is not None and known[0] == identity else self._fixed(base, identity)
        if msix_only and offset == _ABSENT:
            return
        if offset > 0:
            _pread(f"{base}/config", 2, offset + 2)
        _readlink(f"{base}/iommu_group")
        _read(f"{base}/numa_node")
        _read(f"{base}/local_cpulist")
        _readlink(f"{base}/driver")
        try:
            names = os.listdir(f"{base}/msi_irqs")
        except OSError:
            names = []
        if not names:
            return
        irqs = sorted(map(int, names))
        first = irqs[0]
        _read(f"{base}/msi_irqs/{first}")
        debug = _read(f"{self.debugfs}/irq/irqs/{first}") is not None
        if not vectors:
            _read(f"{self.sysfs}/kernel/irq/{first}/chip_name")
            return
        sysfs, procfs, debugfs = self.sysfs, self.procfs, self.debugfs
        for irq in irqs:
            sys_irq = f"{sysfs}/kernel/irq/{irq}"
            _read(f"{sys_irq}/chip_name")
            _read(f"{sys_irq}/hwirq")
            _read(f"{sys_irq}/actions")
            _read(f"{sys_irq}/per_cpu_count")
            _read(f"{sys_irq}/type")
            proc_irq = f"{procfs}/irq/{irq}"
            mode = _read_with_mode(f"{proc_irq}/smp_affinity_list")
            _read(f"{proc_irq}/node")
            _read(f"{proc_irq}/effective_affinity_list")
            if debug and irq != first and mode is not None and mode & 0o200:
                _read(f"{debugfs}/irq/irqs/{irq}")
        for fd in self.eventfds.get(bdf, ()):
            try:
                os.eventfd_read(fd)
            except BlockingIOError:
                pass

    def inventory(self) -> None:
        """ListDevices with vectors: every function with an MSI-X capability."""
        try:
            bdfs = sorted(os.listdir(f"{self.sysfs}/bus/pci/devices"))
        except OSError:
            return
        for bdf in bdfs:
            self.device(bdf, vectors=True, msix_only=True)

