"""A stand-in for msixd.kernel.vfio with identical function signatures.

It models the kernel state that matters to msixd's engine, as vfio_pci_intrs.c
behaves: MSI-X enable allocates vectors 0..start+count-1; without dynamic
MSI-X (NORESIZE) a trigger beyond them fails with EINVAL; a failing block
removes the triggers from start up to the failing vector; a group opens once.
Eventfds are real (os.eventfd), so counts behave as the kernel's do.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field

from msixd.kernel import vfio as real
from msixd.kernel.vfio import IrqInfo, PartialAllocation, error

# VFIO_DEVICE_GET_IRQ_INFO reports eventfd signalling for MSI-X (include/uapi/linux/vfio.h).
VFIO_IRQ_INFO_EVENTFD = 1 << 0


@dataclass
class FakeDevice:
    table_size: int
    dynamic: bool
    enabled: bool = False
    allocated: int = 0
    triggers: dict[int, int] = field(default_factory=dict)  # index -> eventfd
    request: int = -1  # the eventfd the "kernel" signals to ask for the device back
    # When set, enabling allocates at most this many vectors (a partial allocation).
    capacity: int | None = None


class FakeVfio:
    def __init__(self, devices: dict[str, FakeDevice]) -> None:
        self.devices = devices
        self.open_groups: set[int] = set()
        self.noiommu_groups: set[int] = set()  # opened as noiommu-<N>
        self.calls: list[tuple[str, tuple[object, ...]]] = []
        self._fds: dict[int, object] = {}  # fd -> ("group", n) / ("container",) / ("device", bdf)
        self._groups: dict[int, int] = {}  # group fd -> group number

    def _new_fd(self, what: object) -> int:
        fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self._fds[fd] = what
        return fd

    def _device(self, fd: int) -> FakeDevice:
        kind, bdf = self._fds[fd]  # type: ignore[misc]
        assert kind == "device"
        return self.devices[bdf]

    # The functions of msixd.kernel.vfio

    def open_container(self, dev: str) -> int:
        return self._new_fd(("container", None))

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
        fd = self._new_fd(("group", group))
        self._groups[fd] = group
        return fd

    def group_get_status(self, group_fd: int) -> int:
        return real.VFIO_GROUP_FLAGS_VIABLE

    def group_set_container(self, group_fd: int, container: int) -> None:
        pass

    def group_get_device_fd(self, group_fd: int, bdf: str) -> int:
        if bdf not in self.devices:
            raise error("VFIO_GROUP_GET_DEVICE_FD", errno.ENODEV)
        return self._new_fd(("device", bdf))

    def device_get_irq_info(self, device_fd: int, index: int) -> IrqInfo:
        device = self._device(device_fd)
        flags = VFIO_IRQ_INFO_EVENTFD | (0 if device.dynamic else real.VFIO_IRQ_INFO_NORESIZE)
        return IrqInfo(index=index, flags=flags, count=device.table_size)

    def device_set_irqs(self, device_fd: int, index: int, flags: int, start: int, count: int, data: bytes = b"") -> int:
        raise NotImplementedError("the engine uses the msix_* helpers")

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
            device.triggers.pop(vector, None)
            if fd < 0:
                continue
            if vector >= device.allocated:
                if not device.dynamic:
                    for undo in range(start, vector + 1):  # vfio_msi_set_block's rollback
                        device.triggers.pop(undo, None)
                    raise error("VFIO_DEVICE_SET_IRQS", errno.EINVAL)
                device.allocated = vector + 1
            device.triggers[vector] = fd

    def request_set_trigger(self, device_fd: int, fd: int) -> None:
        self._device(device_fd).request = fd

    def ask_back(self, bdf: str) -> None:
        """What unbind or hot removal does: signal the request eventfd."""
        os.eventfd_write(self.devices[bdf].request, 1)

    def msix_disable(self, device_fd: int) -> None:
        device = self._device(device_fd)
        self.calls.append(("msix_disable", ()))
        if not device.enabled:
            raise error("VFIO_DEVICE_SET_IRQS", errno.EINVAL)
        device.enabled, device.allocated = False, 0
        device.triggers.clear()

    def msix_trigger(self, device_fd: int, start: int, count: int = 1) -> None:
        device = self._device(device_fd)
        if not device.enabled:
            raise error("VFIO_DEVICE_SET_IRQS", errno.EINVAL)
        for vector in range(start, start + count):
            if vector in device.triggers:
                os.eventfd_write(device.triggers[vector], 1)

    def close(self, fd: int) -> None:
        what = self._fds.pop(fd, None)
        if what is None:  # an eventfd
            os.close(fd)
            return
        if what[0] == "group":  # type: ignore[index]
            self.open_groups.discard(self._groups.pop(fd))
        if what[0] == "device":  # type: ignore[index]
            device = self._device_by_name(what[1])  # type: ignore[index]
            device.enabled, device.allocated = False, 0  # vfio_pci_core_disable on release
            device.triggers.clear()
            device.request = -1
        os.close(fd)

    def _device_by_name(self, bdf: str) -> FakeDevice:
        return self.devices[bdf]

    def new_eventfd(self) -> int:
        return real.new_eventfd()

    def read_eventfd(self, fd: int) -> int:
        return real.read_eventfd(fd)

    @property
    def open_fds(self) -> int:
        return len(self._fds)
