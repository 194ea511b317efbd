"""The VFIO ioctls msixd uses, one function each (include/uapi/linux/vfio.h).

Every function takes and returns plain values; a failing ioctl raises a VfioError
subclass chosen by errno, carrying the operation and errno. Notes on calling
these from Python (the fcntl module's documentation of ioctl says the first):
* GROUP_GET_DEVICE_FD and SET_IRQS return an integer that fcntl.ioctl only
  passes back when the argument is a *mutable* buffer (bytearray or ctypes).
* SET_IRQS returns a positive count when MSI-X enable allocated fewer vectors
  than asked; the kernel then leaves MSI-X disabled (vfio_msi_enable).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
from dataclasses import dataclass

from msixd.errors import MsixdError
from msixd.kernel.files import errno_of

# _IO(';', 100 + n): no size or direction encoded, argsz carries the size.
VFIO_CHECK_EXTENSION = 0x3B65
VFIO_SET_IOMMU = 0x3B66
VFIO_GROUP_GET_STATUS = 0x3B67
VFIO_GROUP_SET_CONTAINER = 0x3B68
VFIO_GROUP_GET_DEVICE_FD = 0x3B6A
VFIO_DEVICE_GET_INFO = 0x3B6B
VFIO_DEVICE_GET_REGION_INFO = 0x3B6C
VFIO_DEVICE_GET_IRQ_INFO = 0x3B6D
VFIO_DEVICE_SET_IRQS = 0x3B6E

VFIO_TYPE1v2_IOMMU = 3
VFIO_NOIOMMU_IOMMU = 8

VFIO_GROUP_FLAGS_VIABLE = 1 << 0
VFIO_GROUP_FLAGS_CONTAINER_SET = 1 << 1

VFIO_DEVICE_FLAGS_PCI = 1 << 1

VFIO_PCI_CONFIG_REGION_INDEX = 7

VFIO_PCI_MSIX_IRQ_INDEX = 2
# The kernel signals it when it wants the device back (unbind, hot removal):
# vfio_unregister_group_dev() waits for the user to close the device.
VFIO_PCI_REQ_IRQ_INDEX = 4

VFIO_IRQ_INFO_EVENTFD = 1 << 0
VFIO_IRQ_INFO_NORESIZE = 1 << 3

VFIO_IRQ_SET_DATA_NONE = 1 << 0
VFIO_IRQ_SET_DATA_EVENTFD = 1 << 2
VFIO_IRQ_SET_ACTION_TRIGGER = 1 << 5

# Kernel-internal -ENOTSUPP leaks out of the PCI/MSI layer; errno has no name for it.
ENOTSUPP = 524


class VfioError(MsixdError):
    """A VFIO operation failed; `op` names it, `errno` says why."""

    def __init__(self, op: str, err: int, detail: str = "") -> None:
        reason = "operation not supported by the MSI domain" if err == ENOTSUPP else os.strerror(err)
        super().__init__(f"{op}: {reason}" + (f" ({detail})" if detail else ""))
        self.op = op
        self.errno = err


class VfioBusy(VfioError):
    """EBUSY: another process holds the group, or devices of it are still open."""


class VfioNoDevice(VfioError):
    """ENODEV: the group or device is gone, or not bound to vfio-pci."""


class VfioPermission(VfioError):
    """EPERM/EACCES: capability missing, or unsafe interrupts refused."""


class VfioInvalid(VfioError):
    """EINVAL: the kernel refused the request's arguments or the device's state."""


class VfioNoSpace(VfioError):
    """ENOSPC: no vector could be allocated."""


_ERRNO_CLASSES: dict[int, type[VfioError]] = {
    errno.EBUSY: VfioBusy,
    errno.ENODEV: VfioNoDevice,
    errno.ENOENT: VfioNoDevice,
    errno.EPERM: VfioPermission,
    errno.EACCES: VfioPermission,
    errno.EINVAL: VfioInvalid,
    errno.ENOSPC: VfioNoSpace,
}


def error(op: str, err: int, detail: str = "") -> VfioError:
    return _ERRNO_CLASSES.get(err, VfioError)(op, err, detail)


class PartialAllocation(VfioError):
    """SET_IRQS enable could allocate only `available` of the `requested` vectors."""

    def __init__(self, requested: int, available: int) -> None:
        super().__init__(
            "VFIO_DEVICE_SET_IRQS",
            errno.ENOSPC,
            f"the kernel could allocate only {available} of {requested} MSI-X vectors; MSI-X stays disabled",
        )
        self.requested = requested
        self.available = available


def _ioctl(op: str, fd: int, request: int, arg: int | bytearray | ctypes.Structure = 0) -> int:
    try:
        return fcntl.ioctl(fd, request, arg)
    except OSError as err:
        raise error(op, errno_of(err)) from err


class GroupStatus(ctypes.Structure):
    _fields_ = [("argsz", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


class DeviceInfoStruct(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint32) for name in ("argsz", "flags", "num_regions", "num_irqs", "cap_offset", "pad")
    ]


class RegionInfoStruct(ctypes.Structure):
    _fields_ = [
        ("argsz", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("index", ctypes.c_uint32),
        ("cap_offset", ctypes.c_uint32),
        ("size", ctypes.c_uint64),
        ("offset", ctypes.c_uint64),
    ]


class IrqInfoStruct(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint32) for name in ("argsz", "flags", "index", "count")]


@dataclass(frozen=True)
class DeviceInfo:
    flags: int
    num_regions: int
    num_irqs: int


@dataclass(frozen=True)
class RegionInfo:
    index: int
    flags: int
    size: int
    offset: int


@dataclass(frozen=True)
class IrqInfo:
    index: int
    flags: int
    count: int

    @property
    def noresize(self) -> bool:
        return bool(self.flags & VFIO_IRQ_INFO_NORESIZE)


# Container


def open_container(dev: str) -> int:
    """Open a new container, <dev>/vfio/vfio."""
    try:
        return os.open(f"{dev}/vfio/vfio", os.O_RDWR | os.O_CLOEXEC)
    except OSError as err:
        raise error("open vfio container", errno_of(err), f"{dev}/vfio/vfio") from err


def check_extension(container: int, extension: int) -> bool:
    return _ioctl("VFIO_CHECK_EXTENSION", container, VFIO_CHECK_EXTENSION, extension) > 0


def set_iommu(container: int, iommu_type: int) -> None:
    _ioctl("VFIO_SET_IOMMU", container, VFIO_SET_IOMMU, iommu_type)


# Group


def group_path(dev: str, group: int, noiommu: bool = False) -> str:
    """<dev>/vfio/<group>, or <dev>/vfio/noiommu-<group> for a no-IOMMU group."""
    return f"{dev}/vfio/{'noiommu-' if noiommu else ''}{group}"


def open_group(dev: str, group: int, noiommu: bool = False) -> int:
    """Open the group's file (group_path). EBUSY: another process holds it."""
    path = group_path(dev, group, noiommu)
    try:
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as err:
        raise error("open vfio group", errno_of(err), path) from err


def group_get_status(group_fd: int) -> int:
    status = GroupStatus(argsz=ctypes.sizeof(GroupStatus))
    _ioctl("VFIO_GROUP_GET_STATUS", group_fd, VFIO_GROUP_GET_STATUS, status)
    return int(status.flags)


def group_set_container(group_fd: int, container: int) -> None:
    _ioctl("VFIO_GROUP_SET_CONTAINER", group_fd, VFIO_GROUP_SET_CONTAINER, bytearray(struct.pack("=i", container)))


def group_get_device_fd(group_fd: int, bdf: str) -> int:
    return _ioctl("VFIO_GROUP_GET_DEVICE_FD", group_fd, VFIO_GROUP_GET_DEVICE_FD, bytearray(bdf.encode() + b"\0"))


# Device


def device_get_info(device_fd: int) -> DeviceInfo:
    info = DeviceInfoStruct(argsz=ctypes.sizeof(DeviceInfoStruct))
    _ioctl("VFIO_DEVICE_GET_INFO", device_fd, VFIO_DEVICE_GET_INFO, info)
    return DeviceInfo(flags=info.flags, num_regions=info.num_regions, num_irqs=info.num_irqs)


def device_get_region_info(device_fd: int, index: int) -> RegionInfo:
    info = RegionInfoStruct(argsz=ctypes.sizeof(RegionInfoStruct), index=index)
    _ioctl("VFIO_DEVICE_GET_REGION_INFO", device_fd, VFIO_DEVICE_GET_REGION_INFO, info)
    return RegionInfo(index=index, flags=info.flags, size=info.size, offset=info.offset)


def device_get_irq_info(device_fd: int, index: int) -> IrqInfo:
    info = IrqInfoStruct(argsz=ctypes.sizeof(IrqInfoStruct), index=index)
    _ioctl("VFIO_DEVICE_GET_IRQ_INFO", device_fd, VFIO_DEVICE_GET_IRQ_INFO, info)
    return IrqInfo(index=index, flags=info.flags, count=info.count)


def device_set_irqs(device_fd: int, index: int, flags: int, start: int, count: int, data: bytes = b"") -> int:
    """VFIO_DEVICE_SET_IRQS as the kernel defines it; returns its (non-negative) result."""
    buf = bytearray(struct.pack("=IIIII", 20 + len(data), flags, index, start, count) + data)
    return _ioctl("VFIO_DEVICE_SET_IRQS", device_fd, VFIO_DEVICE_SET_IRQS, buf)


def read_config(device_fd: int, offset: int, size: int) -> bytes:
    """Bytes of the device's config space, through the device file's config region (as vfio-pci shows it)."""
    region = device_get_region_info(device_fd, VFIO_PCI_CONFIG_REGION_INDEX)
    try:
        return os.pread(device_fd, size, region.offset + offset)
    except OSError as err:
        raise error("read config region", errno_of(err)) from err


def fd_target(fd: int) -> str:
    """What an open descriptor of this process is, as /proc/self/fd shows it: "/dev/vfio/10",
    "anon_inode:[vfio-device]", "anon_inode:[eventfd]", "socket:[1234]"; "" when it is not open."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


# MSI-X through SET_IRQS


def msix_set_triggers(device_fd: int, start: int, fds: list[int]) -> None:
    """Install (fd >= 0) or remove (-1) the triggers of vectors start..start+len(fds)-1.

    With MSI-X disabled this enables it with start+len(fds) vectors. A positive
    result is a partial allocation: PartialAllocation.
    """
    data = struct.pack(f"={len(fds)}i", *fds)
    flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER
    result = device_set_irqs(device_fd, VFIO_PCI_MSIX_IRQ_INDEX, flags, start, len(fds), data)
    if result > 0:
        raise PartialAllocation(start + len(fds), result)


def msix_disable(device_fd: int) -> None:
    """Free every trigger and every vector (count 0, DATA_NONE)."""
    flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER
    device_set_irqs(device_fd, VFIO_PCI_MSIX_IRQ_INDEX, flags, 0, 0)


def msix_trigger(device_fd: int, start: int, count: int = 1) -> None:
    """Loopback: signal the eventfds of vectors start..start+count-1 as an interrupt would."""
    flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER
    device_set_irqs(device_fd, VFIO_PCI_MSIX_IRQ_INDEX, flags, start, count)


def request_set_trigger(device_fd: int, fd: int) -> None:
    """Install (fd >= 0) or remove (-1) the eventfd the kernel signals to ask for the device back."""
    flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER
    device_set_irqs(device_fd, VFIO_PCI_REQ_IRQ_INDEX, flags, 0, 1, struct.pack("=i", fd))


def close(fd: int) -> None:
    os.close(fd)


def duplicate(fd: int) -> int:
    """Another descriptor of the same open file (close-on-exec), to hand over while the original stays."""
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 0)


def new_eventfd() -> int:
    return os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)


def read_eventfd(fd: int) -> int:
    """The count accumulated since the last read (0 when none)."""
    try:
        return os.eventfd_read(fd)
    except BlockingIOError:
        return 0
