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
import os
import select
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType

import structlog

from msixd.errors import FailedPrecondition, InvalidArgument, LeaseHeld, ResourceExhausted, VectorNotFound
from msixd.kernel import irq as kirq
from msixd.kernel import pci
from msixd.kernel import vfio as kvfio
from msixd.kernel.cpulist import format_cpulist
from msixd.kernel.roots import KernelRoots
from msixd.kernel.vfio import PartialAllocation, VfioError, VfioNoSpace
from msixd.service.desired import DesiredState
from msixd.service.session import LeaseTag, OwnedDevice, Sessions
from msixd.service.state import DeviceState, StateStore

log = structlog.get_logger(__name__)
audit = structlog.get_logger("msixd.audit")


class ResizePath(enum.Enum):
    ENABLE = "enable"
    DYNAMIC = "dynamic"
    REENABLE = "reenable"
    SHRINK = "shrink"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class LeasedVectors:
    """Vectors marked leased, and what the holder gets: duplicates of msixd's own files (the caller
    closes them once handed over), the eventfds in vector order, then the device file if asked."""

    bdf: str
    vectors: tuple[int, ...]
    irqs: tuple[int, ...]
    fds: tuple[int, ...]
    # Vectors enabled for this lease (not there before).
    grown: tuple[int, ...] = ()


# Told (lease id, reason) when msixd takes leased vectors back on its own: a forced resize or
# disable, the kernel asking for the device back. Called with the device lock held: it must
# only record and wake, never take a device lock.
Revoked = Callable[[str, str], None]


@dataclass(frozen=True)
class GivenBack:
    """A device given back because the kernel asked, and which incarnation of it that was."""

    bdf: str
    identity: int | None


class VectorsExhausted(ResourceExhausted):
    """The kernel could not allocate the vectors asked for; what the device kept is said."""

    def __init__(self, bdf: str, asked: int, kept: int, allocated: int, reason: str) -> None:
        held = f"; the kernel holds {allocated} IRQs for it until MSI-X is disabled" if allocated > kept else ""
        super().__init__(
            f"{bdf}: the kernel could not allocate {asked} MSI-X vectors ({reason}): the CPUs' interrupt "
            f"vectors are used up (x86 has about 200 per CPU for all devices); the device keeps its {kept} "
            f"vectors{held}"
        )
        self.bdf = bdf
        self.asked = asked
        self.kept = kept
        self.allocated = allocated


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
    """Owns VFIO devices for msixd: their sessions, their vectors, and the state to restore.

    Locks, outer to inner (a thread holding one may take only those after it):

    0. ``Reconciler._pass_lock`` (msixd/service/reconciler.py): one placement-policy pass at a
       time; a pass places through Placement, so it comes before the device's lock.
    1. ``OwnedDevice.lock``: one device's session and vectors, held for a whole call on
       that device (a resize, a trigger, a release the kernel asked for, a placement of
       one of its vectors).
    2. ``Placement._lock``: one kernel affinity write and its record in the state.
    3. ``Owner._lock`` (the table of owned devices, and the VFIO groups in Sessions),
       DesiredState's lock and ``Leases._lock`` (the table of leases): leaves, held only for
       dictionary work, opening or closing VFIO files, and the state file's write; no other
       lock is taken under them. So are the reconciler's ``_state_lock`` and the irqbalance
       link's lock (copies for readers).

    Leased vectors live under their device's lock like every other vector: ``leased`` says
    which, and msixd reads none of their eventfds.

    A device found in the table may have been closed by the time its lock is taken (the
    kernel asked for it back, msixd is stopping): every path checks ``device.open`` once
    it holds the lock.
    """

    def __init__(self, roots: KernelRoots, store: StateStore, vfio: ModuleType = kvfio) -> None:
        self._roots = roots
        self._vfio = vfio
        self._sessions = Sessions(roots, vfio)
        self._devices: dict[str, OwnedDevice] = {}
        self._desired = DesiredState(store)
        self._lock = threading.Lock()
        self.revoked: Revoked = lambda lease, reason: None

    # Queries

    def owned(self, bdf: str) -> OwnedDevice | None:
        device = self._devices.get(bdf)
        return device if device is not None and device.open else None

    def desired(self) -> dict[str, DeviceState]:
        return self._desired.snapshot()

    def counts(self, bdf: str) -> dict[int, int]:
        """Interrupts counted on each owned vector's eventfds since msixd enabled it; leased vectors
        are left out (their holder reads their eventfds: the kernel's per-CPU counts tell theirs)."""
        device = self._devices.get(bdf)
        if device is None:
            return {}
        with device.lock:
            return self._drain(device) if device.open else {}

    def _drain(self, device: OwnedDevice, indexes: list[int] | None = None) -> dict[int, int]:
        """Add what each eventfd counted since the last read to the vector's count (leased ones are not read)."""
        for index in device.eventfds if indexes is None else indexes:
            if index not in device.leased:
                device.counts[index] = device.counts.get(index, 0) + self._vfio.read_eventfd(device.eventfds[index])
        return {index: device.counts.get(index, 0) for index in device.eventfds if index not in device.leased}

    def leases(self, bdf: str) -> dict[int, LeaseTag]:
        """The leased vectors of an owned device and who holds each."""
        device = self._devices.get(bdf)
        if device is None:
            return {}
        with device.lock:
            return dict(device.leased) if device.open else {}

    # Holding a device

    @contextmanager
    def _locked(self, bdf: str, open_it: bool) -> Iterator[OwnedDevice]:
        """The owned device, locked; with open_it, opened first if need be, and closed
        again if the call that opened it fails before any vector is enabled."""
        bdf = pci.parse_bdf(bdf)
        while True:
            with self._lock:
                device = self._devices.get(bdf)
                fresh = device is None
                if device is None:
                    if not open_it:
                        raise FailedPrecondition(
                            f"msixd does not own {bdf}: run `msixctl enable {bdf} --vectors N` first")
                    device = self._devices[bdf] = self._sessions.open(bdf)
            with device.lock:
                if not device.open:
                    continue  # given back while this call waited for it: look again
                try:
                    yield device
                except BaseException:
                    if fresh and not device.eventfds:
                        self._discard(device)
                    raise
                return

    @contextmanager
    def placing(self, bdf: str) -> Iterator[OwnedDevice | None]:
        """For a placement: the device locked if msixd owns it (its vectors' affinities are
        re-applied under that lock), else None and no lock."""
        device = self._devices.get(bdf)
        if device is None:
            yield None
            return
        with device.lock:
            yield device if device.open else None

    def _discard(self, device: OwnedDevice, reason: str = "msixd released the device") -> None:
        """Close a device and drop it from the table (its lock held); its leases end."""
        for lease in sorted({tag.lease for tag in device.leased.values()}):
            self.revoked(lease, reason)
        device.leased.clear()
        with self._lock:
            if self._devices.get(device.bdf) is device:
                del self._devices[device.bdf]
            self._sessions.close(device)

    # Vectors

    def enable(self, bdf: str, vectors: int, force: bool = False) -> tuple[ResizePath, int]:
        """Make exactly vectors 0..vectors-1 have triggers. Returns the path taken and the count before.

        A change a leased vector would feel (its removal; disabling and re-enabling MSI-X to
        grow without dynamic MSI-X) is refused unless forced; forced, the leases are revoked first.
        """
        with self._locked(bdf, open_it=True) as device:
            if not 1 <= vectors <= device.table_size:
                raise InvalidArgument(
                    f"{bdf} has {device.table_size} MSI-X table entries: ask for 1 to {device.table_size} vectors"
                )
            before = len(device.eventfds)
            path = self._resize(device, set(range(vectors)), force)
            self._desired.set_vectors(device.bdf, vectors)
            return path, before

    def disable(self, bdf: str, vector: int | None = None, force: bool = False) -> list[int]:
        """Release one vector's trigger, or all vectors and the device. Returns the indexes released.

        A leased vector is released only when forced: its lease is revoked first.
        """
        with self._locked(bdf, open_it=False) as device:
            if vector is None:
                self._check_leases(device, set(device.leased), force, "releasing every vector was asked", keep=set())
                released = sorted(device.eventfds)
                self._drain(device)
                self._vfio.msix_disable(device.device_fd)
                self._discard(device)
                self._desired.release(device.bdf)
                log.info("device released", bdf=device.bdf, vectors=len(released))
                return released
            if vector not in device.eventfds:
                raise VectorNotFound(device.bdf, vector)
            self._resize(device, set(device.eventfds) - {vector}, force)
            self._desired.drop_vector(device.bdf, vector, len(device.eventfds))
            return [vector]

    def trigger(self, bdf: str, vector: int) -> tuple[str, int]:
        """Loopback interrupt on an owned vector; returns the device's BDF and the vector's eventfd count
        after (0 for a leased vector: its holder reads the eventfd, msixd does not)."""
        with self._locked(bdf, open_it=False) as device:
            if vector not in device.eventfds:
                raise VectorNotFound(device.bdf, vector)
            self._vfio.msix_trigger(device.device_fd, vector)
            return device.bdf, 0 if vector in device.leased else self._drain(device, [vector])[vector]

    # Leases

    def lease(self, bdf: str, tag: LeaseTag, vectors: frozenset[int] | None, count: int | None, grow: bool,
              device_fd: bool) -> LeasedVectors:
        """Mark vectors leased to `tag` and hand out their eventfds: the `vectors` named, or the first
        `count` not leased. With grow, vectors without a trigger are enabled first (the device's set
        becomes 0..highest, as Enable makes it), the device opened if msixd did not own it."""
        with self._locked(bdf, open_it=grow) as device:
            free = sorted(i for i in device.eventfds if i not in device.leased)
            if vectors is not None:
                if not vectors or max(vectors) >= device.table_size:
                    raise InvalidArgument(f"{device.bdf} has {device.table_size} MSI-X table entries "
                                          f"(vectors 0 to {device.table_size - 1})")
                held = {i: device.leased[i].describe() for i in vectors if i in device.leased}
                if held:
                    raise LeaseHeld(device.bdf, "the vectors asked for are not free", held, hint="")
                wanted = set(vectors)
            else:
                assert count is not None
                if not 1 <= count <= device.table_size:
                    raise InvalidArgument(f"{device.bdf} has {device.table_size} MSI-X table entries: ask for "
                                          f"1 to {device.table_size} vectors")
                missing = [i for i in range(device.table_size) if i not in device.eventfds]
                wanted = set(free[:count]) | set(missing[: max(count - len(free), 0) if grow else 0])
                if len(wanted) < count:
                    raise FailedPrecondition(
                        f"{device.bdf} has {len(free)} vectors enabled and not leased, {count} asked for: "
                        "ask with grow to enable more" if not grow else
                        f"{device.bdf} has {device.table_size} MSI-X table entries, {len(device.leased)} leased")
            before = set(device.eventfds)
            added = sorted(wanted - before)
            if added and not grow:
                raise FailedPrecondition(
                    f"{device.bdf}: vectors {format_cpulist(frozenset(added))} have no trigger (msixd enabled "
                    f"{format_cpulist(frozenset(device.eventfds)) if device.eventfds else 'none'}): ask with grow "
                    "to enable them")
            if added:
                try:
                    self._resize(device, set(device.eventfds) | set(range(max(wanted) + 1)), force=False)
                except LeaseHeld as err:  # a lease client cannot force: no hint about --force
                    raise LeaseHeld(err.bdf, err.what, err.holders, hint="") from None
                self._desired.set_vectors(device.bdf, len(device.eventfds))
            order = sorted(wanted)
            self._drain(device, order)  # what msixd counted before the holder reads them
            irqs = self._irq_of(device)
            fds: list[int] = []
            try:
                for index in order:
                    fds.append(self._vfio.duplicate(device.eventfds[index]))
                if device_fd:
                    fds.append(self._vfio.duplicate(device.device_fd))
            except OSError as err:
                for fd in fds:
                    self._vfio.close(fd)
                raise ResourceExhausted(f"cannot hand out {len(order)} eventfds: {os.strerror(err.errno or 0)}") \
                    from err
            for index in order:
                device.leased[index] = tag
            return LeasedVectors(device.bdf, tuple(order), tuple(irqs.get(i, 0) for i in order), tuple(fds),
                                 tuple(sorted(set(device.eventfds) - before)))

    def close_copies(self, fds: tuple[int, ...]) -> None:
        """Close copies handed out by lease() that were not handed over after all."""
        for fd in fds:
            self._vfio.close(fd)

    def unlease(self, bdf: str, lease: str, release: bool) -> list[int]:
        """The lease ended: its vectors are msixd's again, each with a fresh eventfd of msixd's (the
        holder's copy counts no more), or released (release). Returns the vectors; [] when the device
        or the lease is gone already (revoked, given back to the kernel)."""
        device = self._devices.get(bdf)
        if device is None:
            return []
        with device.lock:
            if not device.open:
                return []
            indexes = sorted(i for i, tag in device.leased.items() if tag.lease == lease)
            for index in indexes:
                del device.leased[index]
            if not indexes:
                return []
            if release:
                self._resize(device, set(device.eventfds) - set(indexes), force=False)
                for index in indexes:
                    self._desired.drop_vector(device.bdf, index, len(device.eventfds))
            else:
                self._fresh_eventfds(device, indexes)
            return indexes

    def _fresh_eventfds(self, device: OwnedDevice, indexes: list[int], install: bool = True) -> None:
        """Give vectors new eventfds of msixd's (install: in the kernel too; else only in the table,
        for a re-enable that installs every vector's). A holder's copy of the old ones counts no more."""
        for run in _runs(sorted(indexes)):
            fds = self._new_eventfds(len(run))
            if install:
                try:
                    self._vfio.msix_set_triggers(device.device_fd, run[0], fds)
                except VfioError:
                    for fd in fds:
                        self._vfio.close(fd)
                    raise
            for index, fd in zip(run, fds, strict=True):
                self._vfio.close(device.eventfds[index])
                device.eventfds[index] = fd

    def _check_leases(self, device: OwnedDevice, touched: set[int], force: bool, what: str,
                      keep: set[int], install: bool = True) -> None:
        """Leased vectors among `touched`: refused unless forced. Forced, their leases are revoked
        (every vector of each): the vectors in `keep` get fresh eventfds of msixd's (installed in
        the kernel unless `install` is False: a re-enable installs them all)."""
        held = {i: device.leased[i] for i in touched if i in device.leased}
        if not held:
            return
        if not force:
            raise LeaseHeld(device.bdf, what, {i: tag.describe() for i, tag in held.items()})
        leases = {tag.lease for tag in held.values()}
        indexes = [i for i, tag in device.leased.items() if tag.lease in leases]
        for index in indexes:
            del device.leased[index]
        self._fresh_eventfds(device, [i for i in indexes if i in keep], install)
        for lease in sorted(leases):
            log.warning("lease revoked", bdf=device.bdf, lease=lease, reason=what)
            self.revoked(lease, f"{what} (forced)")

    def _new_eventfds(self, count: int) -> list[int]:
        fds: list[int] = []
        try:
            for _ in range(count):
                fds.append(self._vfio.new_eventfd())
        except OSError as err:
            for fd in fds:
                self._vfio.close(fd)
            raise ResourceExhausted(
                f"cannot create {count} eventfds: {os.strerror(err.errno or 0)} (msixd holds {len(fds)} more "
                "than it can; raise LimitNOFILE= or enable fewer vectors)"
            ) from err
        return fds

    def _resize(self, device: OwnedDevice, wanted: set[int], force: bool) -> ResizePath:
        have = set(device.eventfds)
        add, remove = sorted(wanted - have), sorted(have - wanted)
        if not add and not remove:
            return ResizePath.UNCHANGED
        self._check_leases(device, set(remove), force, f"releasing vector{'s' if len(remove) > 1 else ''} "
                           f"{format_cpulist(frozenset(remove))} was asked", keep=wanted)
        if add and device.allocated and not device.dynamic and max(add) >= device.allocated:
            self._check_leases(device, set(device.leased), force,
                               f"growing past the {device.allocated} vectors allocated disables and re-enables "
                               "MSI-X (no dynamic MSI-X)", keep=wanted, install=False)
        vfio = self._vfio
        for run in _runs(remove):
            vfio.msix_set_triggers(device.device_fd, run[0], [-1] * len(run))
            self._drain(device, run)
            for index in run:
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
            fds = self._new_eventfds(len(run))
            try:
                vfio.msix_set_triggers(device.device_fd, run[0], fds)
            except VfioError as err:
                for fd in fds:
                    vfio.close(fd)
                if isinstance(err, VfioNoSpace) and device.eventfds:  # a grow the kernel could not give
                    raise VectorsExhausted(device.bdf, len(wanted), len(device.eventfds),
                                           len(kirq.msi_irqs(self._roots, device.bdf)), str(err)) from err
                raise
            device.eventfds.update(zip(run, fds, strict=True))
            device.allocated = max(device.allocated, run[-1] + 1)
        return path

    def _reenable(self, device: OwnedDevice, wanted: set[int]) -> ResizePath:
        """Grow past the vectors allocated at enable time without dynamic MSI-X.

        Every vector keeps its eventfd, and its affinity: the one msixd placed it on (the
        desired state), else the one it had. When the kernel cannot give the larger set,
        the previous one is enabled again, so a refused grow loses nothing.
        """
        vfio = self._vfio
        placed = self._desired.get(device.bdf)
        kept = self._affinities(device)
        if placed is not None:
            kept.update({i: frozenset(c) for i, c in placed.affinities.items() if i in device.eventfds and c})
        before = dict(device.eventfds)
        new = dict(zip(sorted(wanted - set(before)), self._new_eventfds(len(wanted - set(before))), strict=True))
        fds = {**before, **new}
        self._drain(device)
        try:
            vfio.msix_disable(device.device_fd)
        except VfioError:
            for fd in new.values():
                vfio.close(fd)
            raise
        device.allocated = 0
        top = max(wanted)
        try:
            vfio.msix_set_triggers(device.device_fd, 0, [fds.get(i, -1) for i in range(top + 1)])
        except VfioError as err:
            for fd in new.values():
                vfio.close(fd)
            self._enable_again(device, before, kept)
            if isinstance(err, (VfioNoSpace, PartialAllocation)):
                raise VectorsExhausted(device.bdf, len(wanted), len(device.eventfds), len(device.eventfds),
                                       str(err)) from err
            raise
        device.eventfds = dict(sorted(fds.items()))
        device.allocated = top + 1
        self._apply_affinities(device, kept)
        return ResizePath.REENABLE

    def _enable_again(self, device: OwnedDevice, vectors: dict[int, int], kept: dict[int, frozenset[int]]) -> None:
        """After a failed re-enable (MSI-X is off): the vectors the device had, with their eventfds."""
        if not vectors:
            device.eventfds.clear()
            return
        top = max(vectors)
        try:
            self._vfio.msix_set_triggers(device.device_fd, 0, [vectors.get(i, -1) for i in range(top + 1)])
        except VfioError as err:
            log.error("the vectors of the device could not be enabled again; they are lost", bdf=device.bdf,
                      vectors=len(vectors), error=str(err))
            for fd in vectors.values():
                self._vfio.close(fd)
            device.eventfds.clear()
            return
        device.eventfds = dict(sorted(vectors.items()))
        device.allocated = top + 1
        self._apply_affinities(device, kept)

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

    def remember_affinity(self, bdf: str, vector: int, cpus: frozenset[int]) -> None:
        """Keep a placement of an owned vector, to re-apply after re-enable or restart.

        Called by Placement inside placing(bdf), so the write and this record are one step
        for the device.
        """
        if self.owned(bdf) is not None:
            self._desired.set_affinity(bdf, vector, cpus)

    def remember_driver(self, bdf: str, driver: str | None) -> None:
        self._desired.set_driver(bdf, driver)

    def forget_device(self, bdf: str) -> DeviceState | None:
        return self._desired.forget(bdf)

    def restore_one(self, bdf: str, state: DeviceState) -> None:
        """Own the device again as the saved state says: its vector count, then its placements, as one step."""
        with self._locked(bdf, open_it=True) as device:
            if not 1 <= state.vectors <= device.table_size:
                raise InvalidArgument(f"the saved state asks for {state.vectors} vectors; {bdf} has "
                                      f"{device.table_size} MSI-X table entries")
            path = self._resize(device, set(range(state.vectors)), force=False)
            self._apply_affinities(device, {i: frozenset(c) for i, c in state.affinities.items()})
        log.info("state re-applied", bdf=bdf, vectors=state.vectors, path=path.value,
                 affinities=len(state.affinities))

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

    # The kernel asking for devices back, and stopping

    def handle_release_requests(self, timeout: float, stop: threading.Event | None = None) -> list[GivenBack]:
        """Wait up to timeout for the kernel to ask for devices back, and give them back.

        Unbinding a device from vfio-pci, or removing it, blocks in the kernel
        until its user closes it. The desired state stays: the Keeper decides
        whether the device is to be taken back.
        """
        with self._lock:
            waiting = {d.request_fd: d for d in self._devices.values() if d.open and d.request_fd >= 0}
        if not waiting:
            (stop or threading.Event()).wait(timeout)
            return []
        poller = select.poll()
        for fd in waiting:
            poller.register(fd, select.POLLIN)
        given_back = []
        for fd, events in poller.poll(timeout * 1000):
            device = waiting[fd]
            if not events & select.POLLIN:
                continue  # closed meanwhile (POLLNVAL): released by someone else
            with device.lock:
                if not device.open:
                    continue
                self._drain(device)
                self._discard(device)
            log.warning("the kernel asked for the device back (unbind or removal); released it", bdf=device.bdf)
            given_back.append(GivenBack(device.bdf, device.identity))
        return given_back

    def close_all(self) -> None:
        """Shut down: disable MSI-X on every owned device and close everything (state is kept)."""
        with self._lock:
            devices = list(self._devices.values())
        for device in devices:
            with device.lock:
                if not device.open:
                    continue
                if device.allocated:
                    try:
                        self._vfio.msix_disable(device.device_fd)
                    except VfioError as err:
                        log.warning("disable at shutdown failed", bdf=device.bdf, error=str(err))
                self._discard(device)
