"""A device's VFIO session: its group and container, its device file, and its release channel.

Opening follows the kernel's order (drivers/vfio/group.c, container.c): the
group (one open file per group: a second open is EBUSY), checked viable,
given a new container of the right IOMMU type, then the device file from the
group. The group's files are shared by every device of the group msixd owns
and closed with the last of them. Closing the device file makes the kernel
disable its MSI-X (vfio_pci_core_close_device -> vfio_pci_core_disable).

Sessions is not thread-safe by itself: Owner calls it under its table lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from types import ModuleType

import structlog

from msixd.errors import FailedPrecondition, GroupHeld
from msixd.kernel import pci, procs
from msixd.kernel import vfio as kvfio
from msixd.kernel.roots import KernelRoots
from msixd.kernel.vfio import VfioBusy, VfioError

log = structlog.get_logger(__name__)


@dataclass
class OpenGroup:
    """A VFIO group and its container, shared by the group's devices msixd owns."""

    group: int
    group_fd: int
    container_fd: int
    users: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class LeaseTag:
    """Who holds a leased vector: the lease, and the holder as the kernel recorded it at connect time."""

    lease: str
    uid: int
    pid: int
    since: float  # seconds since the Unix epoch

    def describe(self) -> str:
        return f"uid {self.uid} (pid {self.pid}, lease {self.lease})"


@dataclass
class OwnedDevice:
    """One device msixd owns. Everything but `bdf`, `group` and `lock` changes only under `lock`."""

    bdf: str
    group: int
    device_fd: int
    table_size: int
    dynamic: bool
    # MSI-X index -> eventfd of every vector with a trigger installed.
    eventfds: dict[int, int] = field(default_factory=dict)
    # Linux IRQs allocated since MSI-X was enabled (vectors 0..allocated-1).
    allocated: int = 0
    # Interrupts counted on each index's eventfds so far.
    counts: dict[int, int] = field(default_factory=dict)
    # MSI-X index -> the lease that holds it. msixd does not read a leased vector's eventfd:
    # its holder does (two readers of one eventfd would take each other's counts).
    leased: dict[int, LeaseTag] = field(default_factory=dict)
    # Signalled by the kernel when it wants the device back (-1: none installed).
    request_fd: int = -1
    # pci.device_identity when opened: tells a device that was removed and came back from one unbound.
    identity: int | None = None
    # False once closed: a caller that waited for the lock finds the device gone.
    open: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)


class Sessions:
    def __init__(self, roots: KernelRoots, vfio: ModuleType) -> None:
        self._roots = roots
        self._vfio = vfio
        self._groups: dict[int, OpenGroup] = {}

    def _open_group(self, bdf: str, group: int) -> OpenGroup:
        """The group's open files, opening them on first use.

        A group the kernel made for a device without an IOMMU (vfio.enable_unsafe_noiommu_mode,
        CONFIG_VFIO_NOIOMMU) is named "vfio-noiommu", opens as noiommu-<N> and takes
        the no-IOMMU container type; every other group takes type1v2.
        """
        opened = self._groups.get(group)
        if opened is not None:
            return opened
        vfio = self._vfio
        dev = str(self._roots.dev)
        noiommu = pci.iommu_group_name(self._roots, group) == "vfio-noiommu"
        iommu_type = kvfio.VFIO_NOIOMMU_IOMMU if noiommu else kvfio.VFIO_TYPE1v2_IOMMU
        try:
            group_fd = vfio.open_group(dev, group, noiommu)
        except VfioBusy as err:
            holders = procs.holders(self._roots, kvfio.group_path(str(self._roots.dev), group, noiommu))
            raise GroupHeld(bdf, group, [(h.pid, h.command) for h in holders]) from err
        fds = [group_fd]
        try:
            if not vfio.group_get_status(group_fd) & kvfio.VFIO_GROUP_FLAGS_VIABLE:
                raise FailedPrecondition(
                    f"VFIO group {group} of {bdf} is not viable: every device in it must be bound to vfio-pci "
                    "or unbound"
                )
            container_fd = vfio.open_container(dev)
            fds.append(container_fd)
            if not vfio.check_extension(container_fd, iommu_type):
                kind = "no-IOMMU mode" if noiommu else "the type1v2 IOMMU"
                raise FailedPrecondition(f"the VFIO container does not support {kind}")
            vfio.group_set_container(group_fd, container_fd)
            vfio.set_iommu(container_fd, iommu_type)
        except BaseException:
            for fd in reversed(fds):
                vfio.close(fd)
            raise
        opened = self._groups[group] = OpenGroup(group, group_fd, container_fd)
        return opened

    def open(self, bdf: str) -> OwnedDevice:
        device = pci.read_device(self._roots, bdf)
        assert device is not None
        if device.driver != "vfio-pci":
            raise FailedPrecondition(
                f"{bdf} is bound to {device.driver or 'no driver'}, not vfio-pci: run `msixctl bind {bdf}` first"
            )
        if device.iommu_group is None:
            raise FailedPrecondition(f"{bdf} has no IOMMU group: VFIO needs an active IOMMU (e.g. intel_iommu=on)")
        group = self._open_group(bdf, device.iommu_group)
        vfio = self._vfio
        try:
            device_fd = vfio.group_get_device_fd(group.group_fd, bdf)
        except BaseException:
            self._release_group(group)
            raise
        group.users.add(bdf)
        owned = OwnedDevice(bdf=bdf, group=group.group, device_fd=device_fd, table_size=0, dynamic=False,
                            identity=pci.device_identity(self._roots, bdf))
        try:
            info = vfio.device_get_irq_info(device_fd, kvfio.VFIO_PCI_MSIX_IRQ_INDEX)
            if info.count == 0:
                raise FailedPrecondition(f"{bdf} has no MSI-X capability")
        except BaseException:
            self.close(owned)
            raise
        owned.table_size, owned.dynamic = info.count, not info.noresize
        owned.request_fd = vfio.new_eventfd()
        try:
            vfio.request_set_trigger(device_fd, owned.request_fd)
        except VfioError as err:
            vfio.close(owned.request_fd)
            owned.request_fd = -1
            log.warning("no release channel: unbinding or removing the device will wait for msixd to stop",
                        bdf=bdf, error=str(err))
        log.info("device opened", bdf=bdf, group=group.group, table_size=info.count, dynamic=owned.dynamic)
        return owned

    def _release_group(self, group: OpenGroup) -> None:
        if not group.users:
            self._vfio.close(group.group_fd)
            self._vfio.close(group.container_fd)
            del self._groups[group.group]

    def close(self, device: OwnedDevice) -> None:
        """Close the device fd (the kernel disables MSI-X on release), its eventfds, and its group when unused."""
        device.open = False
        for fd in device.eventfds.values():
            self._vfio.close(fd)
        device.eventfds.clear()
        if device.request_fd >= 0:
            self._vfio.close(device.request_fd)
            device.request_fd = -1
        self._vfio.close(device.device_fd)
        group = self._groups[device.group]
        group.users.discard(device.bdf)
        self._release_group(group)
