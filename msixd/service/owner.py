"""Devices msixd owns through VFIO, and their MSI-X vectors.

The path each call drives in the kernel (drivers/vfio/pci/vfio_pci_intrs.c):
the first SET_IRQS with eventfds runs vfio_msi_enable(), which allocates
vectors 0..start+count-1 with pci_alloc_irq_vectors() (on 6.2+ x86 inside a
per-device irq domain made by msi_create_device_irq_domain()); later calls only
install or remove triggers, allocating a missing vector on demand when the
kernel has dynamic MSI-X (VFIO_IRQ_INFO_NORESIZE clear, 6.5+). Without it a
vector beyond those allocated at enable time needs MSI-X disabled and enabled
again, which re-creates every IRQ: msixd then re-applies each kept vector's
affinity.
"""

from __future__ import annotations

import enum
import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType

import structlog

from msixd.errors import FailedPrecondition, GroupHeld, InvalidArgument, VectorNotFound
from msixd.kernel import irq as kirq
from msixd.kernel import pci, procs
from msixd.kernel import vfio as kvfio
from msixd.kernel.cpulist import format_cpulist
from msixd.kernel.files import read_text
from msixd.kernel.roots import KernelRoots
from msixd.kernel.vfio import VfioBusy, VfioError
from msixd.service.state import DeviceState, StateStore

log = structlog.get_logger(__name__)
audit = structlog.get_logger("msixd.audit")


class ResizePath(enum.Enum):
    ENABLE = "enable"
    DYNAMIC = "dynamic"
    REENABLE = "reenable"
    SHRINK = "shrink"
    UNCHANGED = "unchanged"


@dataclass
class OpenGroup:
    """A VFIO group and its container, shared by the group's devices msixd owns."""

    group: int
    group_fd: int
    container_fd: int
    users: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Released:
    """A device given back because the kernel asked, and which incarnation of it that was."""

    bdf: str
    identity: int | None


@dataclass
class OwnedDevice:
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
    # Signalled by the kernel when it wants the device back (-1: none installed).
    request_fd: int = -1
    # pci.device_identity when opened: tells a device that was removed and came back from one unbound.
    identity: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def _runs(indexes: list[int]) -> Iterator[list[int]]:
    """Contiguous runs of sorted indexes: [1, 2, 5] -> [1, 2], [5]."""
    run: list[int] = []
    for index in indexes:
        if run and index != run[-1] + 1:
            yield run
            run = []
        run.append(index)
    if run:
        yield run


class Owner:
    """Owns VFIO devices for msixd. Thread-safe: one lock per device, one for the table."""

    def __init__(self, roots: KernelRoots, store: StateStore, vfio: ModuleType = kvfio) -> None:
        self._roots = roots
        self._store = store
        self._vfio = vfio
        self._devices: dict[str, OwnedDevice] = {}
        self._groups: dict[int, OpenGroup] = {}
        self._desired: dict[str, DeviceState] = store.load()
        self._lock = threading.Lock()

    # Queries

    def owned(self, bdf: str) -> OwnedDevice | None:
        return self._devices.get(bdf)

    def desired(self) -> dict[str, DeviceState]:
        with self._lock:
            return {bdf: DeviceState(s.vectors, dict(s.affinities), s.previous_driver) for bdf, s in self._desired.items()}

    def counts(self, bdf: str) -> dict[int, int]:
        """Interrupts counted on each owned vector's eventfds since msixd enabled it."""
        device = self._devices.get(bdf)
        if device is None:
            return {}
        with device.lock:
            return self._drain(device)

    def _drain(self, device: OwnedDevice) -> dict[int, int]:
        for index, fd in device.eventfds.items():
            device.counts[index] = device.counts.get(index, 0) + self._vfio.read_eventfd(fd)
        return {index: device.counts.get(index, 0) for index in device.eventfds}

    # Opening and closing

    def _open_group(self, bdf: str, group: int) -> OpenGroup:
        """The group's open files, opening them on first use (one open per group: the kernel allows no more).

        A group the kernel made for a device without an IOMMU (vfio.enable_unsafe_noiommu_mode,
        CONFIG_VFIO_NOIOMMU) is named "vfio-noiommu", opens as noiommu-<N> and takes
        the no-IOMMU container type; every other group takes type1v2.
        """
        opened = self._groups.get(group)
        if opened is not None:
            return opened
        vfio = self._vfio
        dev = str(self._roots.dev)
        noiommu = read_text(f"{self._roots.sysfs}/kernel/iommu_groups/{group}/name") == "vfio-noiommu"
        iommu_type = kvfio.VFIO_NOIOMMU_IOMMU if noiommu else kvfio.VFIO_TYPE1v2_IOMMU
        try:
            group_fd = vfio.open_group(dev, group, noiommu)
        except VfioBusy as err:
            holders = procs.holders(self._roots, f"/dev/vfio/{'noiommu-' if noiommu else ''}{group}")
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

    def _open(self, bdf: str) -> OwnedDevice:
        device = pci.read_device(self._roots, bdf)
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
            self._close(owned)
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

    def _close(self, device: OwnedDevice) -> None:
        """Close the device fd (the kernel disables MSI-X on release), its eventfds, and its group when unused."""
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

    @contextmanager
    def _device(self, bdf: str, open_it: bool) -> Iterator[OwnedDevice]:
        """The owned device, locked; with open_it, opened first if need be, and closed
        again if the request that opened it fails before any vector is enabled."""
        bdf = pci.parse_bdf(bdf)
        with self._lock:
            device = self._devices.get(bdf)
            fresh = device is None
            if device is None:
                if not open_it:
                    raise FailedPrecondition(f"msixd does not own {bdf}: run `msixctl enable {bdf} --vectors N` first")
                device = self._devices[bdf] = self._open(bdf)
        with device.lock:
            try:
                yield device
            except BaseException:
                if fresh and not device.eventfds:
                    with self._lock:
                        self._devices.pop(bdf, None)
                        self._close(device)
                raise

    # Vectors

    def enable(self, bdf: str, vectors: int) -> tuple[ResizePath, int]:
        """Make exactly vectors 0..vectors-1 have triggers. Returns the path taken and the count before."""
        with self._device(bdf, open_it=True) as device:
            if not 1 <= vectors <= device.table_size:
                raise InvalidArgument(
                    f"{bdf} has {device.table_size} MSI-X table entries: ask for 1 to {device.table_size} vectors"
                )
            before = len(device.eventfds)
            path = self._resize(device, set(range(vectors)))
            self._remember(device.bdf, vectors=vectors)
            return path, before

    def disable(self, bdf: str, vector: int | None = None) -> list[int]:
        """Release one vector's trigger, or all vectors and the device. Returns the indexes released."""
        with self._device(bdf, open_it=False) as device:
            if vector is None:
                released = sorted(device.eventfds)
                self._drain(device)
                self._vfio.msix_disable(device.device_fd)
                with self._lock:
                    del self._devices[device.bdf]
                    self._close(device)
                self._forget(device.bdf)
                log.info("device released", bdf=device.bdf, vectors=len(released))
                return released
            if vector not in device.eventfds:
                raise VectorNotFound(device.bdf, vector)
            self._resize(device, set(device.eventfds) - {vector})
            self._remember(device.bdf, vectors=len(device.eventfds))
            return [vector]

    def trigger(self, bdf: str, vector: int) -> int:
        """Loopback interrupt on an owned vector; returns its eventfd count after."""
        with self._device(bdf, open_it=False) as device:
            if vector not in device.eventfds:
                raise VectorNotFound(device.bdf, vector)
            self._vfio.msix_trigger(device.device_fd, vector)
            return self._drain(device)[vector]

    def _resize(self, device: OwnedDevice, wanted: set[int]) -> ResizePath:
        have = set(device.eventfds)
        add, remove = sorted(wanted - have), sorted(have - wanted)
        if not add and not remove:
            return ResizePath.UNCHANGED
        vfio = self._vfio
        for run in _runs(remove):
            vfio.msix_set_triggers(device.device_fd, run[0], [-1] * len(run))
            for index in run:
                self._drain_one(device, index)
                vfio.close(device.eventfds.pop(index))
        if not add:
            return ResizePath.SHRINK
        if device.allocated == 0:
            path = ResizePath.ENABLE
        elif device.dynamic or max(add) < device.allocated:
            path = ResizePath.DYNAMIC
        else:
            return self._reenable(device, wanted)
        for run in _runs(add):
            fds = [vfio.new_eventfd() for _ in run]
            try:
                vfio.msix_set_triggers(device.device_fd, run[0], fds)
            except VfioError:
                for fd in fds:
                    vfio.close(fd)
                raise
            device.eventfds.update(zip(run, fds, strict=True))
            device.allocated = max(device.allocated, run[-1] + 1)
        return path

    def _drain_one(self, device: OwnedDevice, index: int) -> None:
        device.counts[index] = device.counts.get(index, 0) + self._vfio.read_eventfd(device.eventfds[index])

    def _reenable(self, device: OwnedDevice, wanted: set[int]) -> ResizePath:
        """Grow past the vectors allocated at enable time without dynamic MSI-X."""
        vfio = self._vfio
        kept = self._affinities(device)
        self._drain(device)
        vfio.msix_disable(device.device_fd)
        device.allocated = 0
        top = max(wanted)
        fds = {index: device.eventfds.get(index) or vfio.new_eventfd() for index in wanted}
        try:
            vfio.msix_set_triggers(device.device_fd, 0, [fds.get(i, -1) for i in range(top + 1)])
        except VfioError:
            # MSI-X is off now; the vectors that were there before are lost too.
            for index, fd in fds.items():
                if index not in device.eventfds:
                    vfio.close(fd)
            for fd in device.eventfds.values():
                vfio.close(fd)
            device.eventfds.clear()
            raise
        device.eventfds = dict(sorted(fds.items()))
        device.allocated = top + 1
        self._apply_affinities(device, kept)
        return ResizePath.REENABLE

    def _irq_of(self, device: OwnedDevice) -> dict[int, int]:
        """MSI-X index -> Linux IRQ for the device's allocated vectors."""
        mapping = {}
        for number in kirq.msi_irqs(self._roots, device.bdf):
            sys_irq = kirq.read_sys_irq(self._roots, number)
            if sys_irq is None:
                continue
            found = kirq.vector_index(device.bdf, sys_irq.chip_name, sys_irq.hwirq, sys_irq.actions)
            if found is not None:
                mapping[found[0]] = number
        return mapping

    def _affinities(self, device: OwnedDevice) -> dict[int, frozenset[int]]:
        kept = {}
        for index, number in self._irq_of(device).items():
            proc = kirq.read_proc_irq(self._roots, number)
            if index in device.eventfds and proc is not None:
                kept[index] = proc.affinity
        return kept

    def _apply_affinities(self, device: OwnedDevice, affinities: dict[int, frozenset[int]]) -> None:
        irqs = self._irq_of(device)
        for index, cpus in affinities.items():
            if index in irqs and cpus:
                try:
                    kirq.write_affinity(self._roots, irqs[index], format_cpulist(cpus))
                except (kirq.AffinityRefused, kirq.AffinityRejected) as err:
                    log.warning("affinity not re-applied", bdf=device.bdf, vector=index, error=str(err))

    # Desired state

    def _remember(self, bdf: str, **changes: object) -> None:
        with self._lock:
            state = self._desired.setdefault(bdf, DeviceState())
            for name, value in changes.items():
                setattr(state, name, value)
            self._store.save(self._desired)

    def remember_affinity(self, bdf: str, vector: int, cpus: frozenset[int]) -> None:
        """Keep a placement of an owned vector, to re-apply after re-enable or restart."""
        if bdf not in self._devices:
            return
        with self._lock:
            self._desired.setdefault(bdf, DeviceState()).affinities[vector] = sorted(cpus)
            self._store.save(self._desired)

    def remember_driver(self, bdf: str, driver: str | None) -> None:
        self._remember(bdf, previous_driver=driver)

    def _forget(self, bdf: str) -> None:
        with self._lock:
            state = self._desired.get(bdf)
            if state is None:
                return
            if state.previous_driver:  # still bound to vfio-pci: Release needs to know
                state.vectors, state.affinities = 0, {}
            else:
                del self._desired[bdf]
            self._store.save(self._desired)

    def forget_device(self, bdf: str) -> DeviceState | None:
        with self._lock:
            state = self._desired.pop(bdf, None)
            self._store.save(self._desired)
            return state

    def restore_one(self, bdf: str, state: DeviceState) -> None:
        """Own the device again as the saved state says: its vector count, then its placements."""
        self.enable(bdf, state.vectors)
        device = self._devices[bdf]
        with device.lock:
            self._apply_affinities(device, {i: frozenset(c) for i, c in state.affinities.items()})
        log.info("state re-applied", bdf=bdf, vectors=state.vectors, affinities=len(state.affinities))

    def restore(self) -> dict[str, str]:
        """Re-apply the saved state at start. Returns bdf -> "" or what went wrong."""
        outcome = {}
        for bdf, state in self.desired().items():
            if state.vectors == 0:
                continue
            try:
                self.restore_one(bdf, state)
                outcome[bdf] = ""
                audit.info("restore", bdf=bdf, vectors=state.vectors, affinities=state.affinities, by="msixd",
                           reason="re-applying the saved state at start")
            except Exception as err:  # noqa: BLE001 - one device's trouble must not stop the others
                outcome[bdf] = str(err)
                log.warning("state not re-applied", bdf=bdf, error=str(err))
        return outcome

    def handle_release_requests(self, timeout: float) -> list[Released]:
        """Wait up to timeout for the kernel to ask for devices back, and give them back.

        Unbinding a device from vfio-pci, or removing it, blocks in the kernel
        until its user closes it. The desired state stays: the Keeper decides
        whether the device is to be taken back.
        """
        with self._lock:
            waiting = {d.request_fd: d for d in self._devices.values() if d.request_fd >= 0}
        if not waiting:
            time.sleep(timeout)
            return []
        poller = select.poll()
        for fd in waiting:
            poller.register(fd, select.POLLIN)
        released = []
        for fd, _ in poller.poll(timeout * 1000):
            device = waiting[fd]
            with self._lock:
                if self._devices.get(device.bdf) is not device:
                    continue  # released meanwhile
                with device.lock:
                    self._drain(device)
                    del self._devices[device.bdf]
                    self._close(device)
            log.warning("the kernel asked for the device back (unbind or removal); released it", bdf=device.bdf)
            released.append(Released(device.bdf, device.identity))
        return released

    def close_all(self) -> None:
        """Shut down: disable MSI-X on every owned device and close everything (state is kept)."""
        with self._lock:
            devices = list(self._devices.values())
            self._devices.clear()
            for device in devices:
                with device.lock:
                    if device.allocated:
                        try:
                            self._vfio.msix_disable(device.device_fd)
                        except VfioError as err:
                            log.warning("disable at shutdown failed", bdf=device.bdf, error=str(err))
                    self._close(device)
