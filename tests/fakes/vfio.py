"""A stand-in for msixd.kernel.vfio with identical function signatures.

It models the kernel state that matters to msixd's engine, as vfio_pci_intrs.c
behaves: MSI-X enable allocates vectors 0..start+count-1; without dynamic
MSI-X (NORESIZE) a trigger beyond them fails with EINVAL; a failing block
removes the triggers from start up to the failing vector; a group opens once.
Eventfds are real (os.eventfd), so counts behave as the kernel's do.

Each container, group and device "file" is a memfd of its own, named after
what it is: a copy (dup, SCM_RIGHTS to a fake systemd in the same process)
is the same file, and, as in the kernel, a device is closed (MSI-X disabled)
and a group released only when the last descriptor of its file closes.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from msixd.kernel import vfio as real
from msixd.kernel.vfio import DeviceInfo, IrqInfo, PartialAllocation, RegionInfo, error


@dataclass
class FakeDevice:
    table_size: int
    dynamic: bool
    enabled: bool = False
    allocated: int = 0
    # index -> the "kernel's" own reference to the eventfd installed (a copy, as eventfd_ctx_fdget
    # takes one: it counts whatever msixd does with its descriptor), and that eventfd's id.
    triggers: dict[int, int] = field(default_factory=dict)
    ids: dict[int, int] = field(default_factory=dict)
    request: int = -1  # the eventfd the "kernel" signals to ask for the device back
    # When set, enabling allocates at most this many vectors (a partial allocation).
    capacity: int | None = None
    # Config space as the device file's config region shows it (read_config).
    config: bytes = b""


def eventfd_id(fd: int) -> int:
    """Which eventfd a descriptor is (fs/eventfd.c shows "eventfd-id" in fdinfo): copies share it."""
    with open(f"/proc/self/fdinfo/{fd}") as info:
        return next(int(line.split()[1]) for line in info if line.startswith("eventfd-id:"))


def _untrigger(device: FakeDevice, vector: int) -> None:
    if vector in device.triggers:
        os.close(device.triggers.pop(vector))
        device.ids.pop(vector, None)


class FakeVfio:
    # Each fake's files are named after a number no other fake of the process has: an id() is reused
    # once its object is gone, and files an earlier test left open would count as this fake's.
    _made = itertools.count()

    def __init__(self, devices: dict[str, FakeDevice], sysfs: Path | None = None) -> None:
        """sysfs: a captured tree's sys/ to mirror the vectors into, as the kernel shows them
        (msi_irqs/ of the device, /sys/kernel/irq/N with vfio-pci's handler names)."""
        self._tag = f"fakevfio{next(self._made)}"
        self.devices = devices
        self.sysfs = sysfs
        self.open_groups: set[int] = set()
        self.noiommu_groups: set[int] = set()  # opened as noiommu-<N>
        self.calls: list[tuple[str, tuple[object, ...]]] = []

    def _new_fd(self, kind: str, name: object) -> int:
        return os.memfd_create(f"{self._tag}-{kind}-{name}", os.MFD_CLOEXEC)

    def _what(self, fd: int) -> tuple[str, str] | None:
        """("device", bdf), ("group", "7"), ("container", ...) for a file of this fake, else None."""
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return None
        match = re.fullmatch(rf"/memfd:{self._tag}-(\w+)-(\S+) \(deleted\)", target)
        return (match.group(1), match.group(2)) if match else None

    def _others(self, fd: int) -> bool:
        """Whether another descriptor of this process is the same file as fd."""
        inode = os.fstat(fd).st_ino
        for name in os.listdir("/proc/self/fd"):
            other = int(name)
            if other == fd:
                continue
            try:
                if os.readlink(f"/proc/self/fd/{other}").startswith(f"/memfd:{self._tag}-") \
                        and os.fstat(other).st_ino == inode:
                    return True
            except OSError:
                continue
        return False

    def _device(self, fd: int) -> FakeDevice:
        what = self._what(fd)
        assert what is not None and what[0] == "device", what
        return self.devices[what[1]]

    # The functions of msixd.kernel.vfio

    def open_container(self, dev: str) -> int:
        return self._new_fd("container", "vfio")

    def check_extension(self, container: int, extension: int) -> bool:
        return extension in (real.VFIO_TYPE1v2_IOMMU, real.VFIO_NOIOMMU_IOMMU)

    def set_iommu(self, container: int, iommu_type: int) -> None:
        self.calls.append(("set_iommu", (iommu_type,)))

    def group_path(self, dev: str, group: int, noiommu: bool = False) -> str:
        return real.group_path(dev, group, noiommu)

    def open_group(self, dev: str, group: int, noiommu: bool = False) -> int:
        if group in self.open_groups:
            raise error("open vfio group", errno.EBUSY, f"{dev}/vfio/{group}")
        self.open_groups.add(group)
        if noiommu:
            self.noiommu_groups.add(group)
        return self._new_fd("group", group)

    def group_get_status(self, group_fd: int) -> int:
        return real.VFIO_GROUP_FLAGS_VIABLE | real.VFIO_GROUP_FLAGS_CONTAINER_SET

    def group_set_container(self, group_fd: int, container: int) -> None:
        pass

    def group_get_device_fd(self, group_fd: int, bdf: str) -> int:
        if bdf not in self.devices:
            raise error("VFIO_GROUP_GET_DEVICE_FD", errno.ENODEV)
        return self._new_fd("device", bdf)

    def device_get_info(self, device_fd: int) -> DeviceInfo:
        return DeviceInfo(flags=real.VFIO_DEVICE_FLAGS_PCI, num_regions=9, num_irqs=5)

    def device_get_region_info(self, device_fd: int, index: int) -> RegionInfo:
        return RegionInfo(index=index, flags=3, size=4096, offset=index << 40)

    def device_get_irq_info(self, device_fd: int, index: int) -> IrqInfo:
        device = self._device(device_fd)
        flags = real.VFIO_IRQ_INFO_EVENTFD | (0 if device.dynamic else real.VFIO_IRQ_INFO_NORESIZE)
        return IrqInfo(index=index, flags=flags, count=device.table_size)

    def device_set_irqs(self, device_fd: int, index: int, flags: int, start: int, count: int, data: bytes = b"") -> int:
        raise NotImplementedError("the engine uses the msix_* helpers")

    def read_config(self, device_fd: int, offset: int, size: int) -> bytes:
        return self._device(device_fd).config[offset : offset + size]

    def fd_target(self, fd: int) -> str:
        what = self._what(fd)
        if what is None:
            return real.fd_target(fd)
        kind, name = what
        return {"container": "/dev/vfio/vfio", "group": f"/dev/vfio/{name}", "device": "anon_inode:[vfio-device]"}[kind]

    def msix_set_triggers(self, device_fd: int, start: int, fds: list[int]) -> None:
        device = self._device(device_fd)
        self.calls.append(("msix_set_triggers", (start, list(fds))))
        if start + len(fds) > device.table_size:
            raise error("VFIO_DEVICE_SET_IRQS", errno.EINVAL)
        if not device.enabled:
            wanted = start + len(fds)
            if device.capacity is not None and device.capacity < wanted:
                raise PartialAllocation(wanted, device.capacity)
            device.enabled, device.allocated = True, wanted
        for offset, fd in enumerate(fds):
            vector = start + offset
            _untrigger(device, vector)
            if fd < 0:
                continue
            if vector >= device.allocated:
                if not device.dynamic:
                    for undo in range(start, vector + 1):  # vfio_msi_set_block's rollback
                        _untrigger(device, undo)
                    raise error("VFIO_DEVICE_SET_IRQS", errno.EINVAL)
                device.allocated = vector + 1
            device.triggers[vector] = os.dup(fd)
            device.ids[vector] = eventfd_id(fd)
        self._mirror(device_fd)

    def request_set_trigger(self, device_fd: int, fd: int) -> None:
        device = self._device(device_fd)
        if device.request >= 0:
            os.close(device.request)
        device.request = os.dup(fd) if fd >= 0 else -1

    def ask_back(self, bdf: str) -> None:
        """What unbind or hot removal does: signal the request eventfd."""
        os.eventfd_write(self.devices[bdf].request, 1)

    def msix_disable(self, device_fd: int) -> None:
        device = self._device(device_fd)
        self.calls.append(("msix_disable", ()))
        if not device.enabled:
            raise error("VFIO_DEVICE_SET_IRQS", errno.EINVAL)
        device.enabled, device.allocated = False, 0
        for vector in list(device.triggers):
            _untrigger(device, vector)
        self._mirror(device_fd)

    def msix_trigger(self, device_fd: int, start: int, count: int = 1) -> None:
        device = self._device(device_fd)
        if not device.enabled:
            raise error("VFIO_DEVICE_SET_IRQS", errno.EINVAL)
        for vector in range(start, start + count):
            if vector in device.triggers:
                os.eventfd_write(device.triggers[vector], 1)

    def close(self, fd: int) -> None:
        what = self._what(fd)
        last = what is not None and not self._others(fd)
        os.close(fd)
        if what is None or not last:  # an eventfd, or a file still open through another descriptor
            return
        kind, name = what
        if kind == "group":
            self.open_groups.discard(int(name))
        if kind == "device":
            device = self.devices[name]
            device.enabled, device.allocated = False, 0  # vfio_pci_core_disable on release
            for vector in list(device.triggers):
                _untrigger(device, vector)
            if device.request >= 0:
                os.close(device.request)
            device.request = -1
            self._mirror_device(name)

    def settle(self) -> None:
        """Release what no descriptor refers to any more: files closed by others than msixd's code
        (a fake systemd flushing its store), as the kernel releases a file at its last close."""
        open_now = {what for name in os.listdir("/proc/self/fd") if (what := self._what(int(name))) is not None}
        for bdf, device in self.devices.items():
            if ("device", bdf) not in open_now and (device.enabled or device.request >= 0):
                device.enabled, device.allocated = False, 0
                for vector in list(device.triggers):
                    _untrigger(device, vector)
                if device.request >= 0:
                    os.close(device.request)
                device.request = -1
                self._mirror_device(bdf)
        self.open_groups = {group for group in self.open_groups if ("group", str(group)) in open_now}

    def _mirror(self, device_fd: int) -> None:
        what = self._what(device_fd)
        if what is not None:
            self._mirror_device(what[1])

    def _mirror_device(self, bdf: str) -> None:
        """The device's allocated vectors in msi_irqs/ (IRQ 1000 + index here), each with a
        per-device chip and, where a trigger is installed, vfio-pci's handler name."""
        if self.sysfs is None:
            return
        device = self.devices[bdf]
        listing = self.sysfs / "bus/pci/devices" / bdf / "msi_irqs"
        shutil.rmtree(listing, ignore_errors=True)
        listing.mkdir()
        for index in range(device.allocated if device.enabled else 0):
            irq = 1000 + index
            (listing / str(irq)).write_text("msix\n")
            base = self.sysfs / "kernel/irq" / str(irq)
            base.mkdir(parents=True, exist_ok=True)
            (base / "chip_name").write_text(f"PCI-MSIX-{bdf}\n")
            (base / "hwirq").write_text(f"{index}\n")
            (base / "type").write_text("edge\n")
            (base / "per_cpu_count").write_text("0,0\n")
            (base / "actions").write_text(f"vfio-msix[{index}]({bdf})\n" if index in device.triggers else "\n")

    def duplicate(self, fd: int) -> int:
        return real.duplicate(fd)  # a copy handed out is the holder's to close: the fake tracks only msixd's own

    def new_eventfd(self) -> int:
        return real.new_eventfd()

    def write_eventfd(self, fd: int, value: int) -> None:
        real.write_eventfd(fd, value)

    def set_nonblocking(self, fd: int) -> None:
        real.set_nonblocking(fd)

    def read_eventfd(self, fd: int) -> int:
        return real.read_eventfd(fd)

    @property
    def open_fds(self) -> int:
        """Fake VFIO files open in this process."""
        return sum(1 for name in os.listdir("/proc/self/fd") if self._what(int(name)) is not None)
