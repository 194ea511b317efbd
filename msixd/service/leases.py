"""Leases: MSI-X vectors msixd owns, handed to the processes that use them.

A lease gives its holder the eventfds of some of a device's vectors (the same
kernel objects VFIO signals: vfio_msihandler() calls eventfd_signal() on the
eventfd_ctx it took from the file msixd passed to VFIO_DEVICE_SET_IRQS), and,
when the configuration allows it, the device's VFIO file. While a vector is
leased msixd does not read its eventfd: two readers of one eventfd take each
other's counts (a read returns the counter and resets it, eventfd(2)); its
count comes from the kernel's per-CPU counts instead. A lease lives as long as
its holder's connection: when it ends, its vectors are msixd's again, each
with a fresh eventfd of msixd's (the holder's copy counts no more), or
released, as the lease asked.

Who may lease what: admins anything; anyone else what a [[lease]] table of
the configuration grants to their uid or one of their groups, as the kernel
recorded them at connect time (the transport's job, msixd/rpc/leaseserve.py).
"""

from __future__ import annotations

import enum
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from msixd.config import LeaseRule
from msixd.errors import FailedPrecondition, LeaseNotFound, LeaseNotPermitted
from msixd.kernel import pci
from msixd.kernel.roots import KernelRoots
from msixd.service.fdstore import NO_STORE, FdStore
from msixd.service.owner import Owner
from msixd.service.session import LeaseTag

log = structlog.get_logger(__name__)
audit = structlog.get_logger("msixd.audit")


class Return(enum.Enum):
    """What becomes of a lease's vectors when it ends."""

    OWN = "own"  # msixd's again, each with a fresh eventfd
    RELEASE = "release"  # their triggers removed


@dataclass(frozen=True)
class Holder:
    """A lease's holder as the kernel recorded it when it connected (SO_PEERCRED, SO_PEERGROUPS)."""

    uid: int
    gid: int
    pid: int
    groups: frozenset[int] = frozenset()

    def describe(self) -> str:
        return f"uid {self.uid} (pid {self.pid})"


@dataclass(frozen=True)
class LeaseRequest:
    bdf: str
    # The vectors asked for by index, or `count` vectors (the first enabled ones not leased).
    vectors: frozenset[int] | None = None
    count: int | None = None
    # Enable vectors that have no trigger yet (opening the device if msixd does not own it).
    grow: bool = False
    device_fd: bool = False
    on_return: Return = Return.OWN


@dataclass(frozen=True)
class Lease:
    id: str
    bdf: str
    vectors: tuple[int, ...]
    irqs: tuple[int, ...]
    holder: Holder
    since: float  # seconds since the Unix epoch
    device_fd: bool
    on_return: Return
    grown: tuple[int, ...] = ()


@dataclass(frozen=True)
class Grant:
    """A lease and the descriptors to hand its holder: eventfds in vector order, then the device
    file when granted. They are copies: the caller closes them once handed over."""

    lease: Lease
    fds: tuple[int, ...]


@dataclass(frozen=True)
class LeaseStats:
    granted: int
    held: int
    revoked: int


# Told (lease id, reason) when a lease is revoked: the transport tells the holder and closes.
Notify = Callable[[str, str], None]


class Leases:
    """The table of leases. Its lock is a leaf (msixd/service/owner.py gives the order): the
    Owner reports leases it revoked on its own while holding a device lock."""

    def __init__(self, roots: KernelRoots, owner: Owner, rules: tuple[LeaseRule, ...] = (),
                 clock: Callable[[], float] = time.time, store: FdStore = NO_STORE) -> None:
        self._roots = roots
        self._owner = owner
        self._store = store
        self._clock = clock
        self.rules = rules  # replaced as a whole on reload
        self._leases: dict[str, Lease] = {}
        self._lock = threading.Lock()
        self._granted: Counter[str] = Counter()
        self._revoked: Counter[str] = Counter()
        # Leases being granted: True once the Owner revoked one before grant() could record it.
        self._granting: dict[str, bool] = {}
        # Leases whose vectors are being returned: still listed, not to be ended twice.
        self._ending: set[str] = set()
        self.notify: Notify = lambda lease, reason: None
        owner.revoked = self._taken_back

    # Queries

    def list(self, bdf: str | None = None) -> list[Lease]:
        with self._lock:
            leases = [lease for lease in self._leases.values() if bdf is None or lease.bdf == bdf]
        return sorted(leases, key=lambda lease: (lease.bdf, lease.vectors))

    def get(self, lease_id: str) -> Lease | None:
        with self._lock:
            return self._leases.get(lease_id)

    def stats(self) -> dict[str, LeaseStats]:
        with self._lock:
            held = Counter(lease.bdf for lease in self._leases.values())
            return {bdf: LeaseStats(self._granted[bdf], held[bdf], self._revoked[bdf])
                    for bdf in sorted(set(self._granted) | set(held) | set(self._revoked))}

    # Granting

    def permitted(self, holder: Holder, admin: bool, bdf: str, device_fd: bool) -> None:
        """Raise LeaseNotPermitted unless the holder may lease the device's vectors (and its VFIO file)."""
        if admin:
            return
        device = pci.read_device(self._roots, bdf)
        assert device is not None  # None only when asked for MSI-X devices alone
        ids = f"{device.vendor_id:04x}:{device.device_id:04x}"
        groups = holder.groups | {holder.gid}
        rules = [rule for rule in self.rules if rule.covers(bdf, ids) and rule.names(holder.uid, groups)]
        if not rules:
            raise LeaseNotPermitted(f"uid {holder.uid} may not lease the vectors of {bdf} ({ids}): msixd's "
                                    "configuration has no [[lease]] table naming this user or a group of it for it")
        if device_fd and not any(rule.device_fd for rule in rules):
            raise LeaseNotPermitted(f"uid {holder.uid} may lease the vectors of {bdf} but not its VFIO device "
                                    "file: the [[lease]] table granting it does not say device_fd = true")

    def grant(self, holder: Holder, admin: bool, request: LeaseRequest) -> Grant:
        bdf = pci.parse_bdf(request.bdf)
        self.permitted(holder, admin, bdf, request.device_fd)
        lease_id = secrets.token_hex(6)
        since = self._clock()
        tag = LeaseTag(lease_id, holder.uid, holder.pid, since)
        with self._lock:
            self._granting[lease_id] = False
        try:
            leased = self._owner.lease(bdf, tag, request.vectors, request.count, request.grow, request.device_fd)
        except BaseException:
            with self._lock:
                del self._granting[lease_id]
            raise
        lease = Lease(lease_id, leased.bdf, leased.vectors, leased.irqs, holder, since, request.device_fd,
                      request.on_return, leased.grown)
        with self._lock:
            revoked = self._granting.pop(lease_id)
            if not revoked:
                self._leases[lease_id] = lease
                self._granted[lease.bdf] += 1
                self._store.record_lease(lease_id, facts(lease))
        if revoked:  # a forced resize took them back while this grant finished
            self._owner.close_copies(leased.fds)
            raise FailedPrecondition(f"{lease.bdf}: the vectors were taken back while being leased; ask again")
        audit.info("lease grant", **_fields(lease), by=holder.describe())
        return Grant(lease, leased.fds)

    def restore(self, lease: Lease) -> None:
        """A lease adopted at start from systemd's store (msixd/service/adopt.py): held again."""
        with self._lock:
            self._leases[lease.id] = lease
        audit.info("lease adopt", **_fields(lease), by="msixd",
                   reason="its connection was kept in systemd's file descriptor store across a restart")

    # Ending

    def end(self, lease_id: str, reason: str) -> Lease | None:
        """The holder's connection closed: the lease ends as it asked (its vectors msixd's again, or
        released). None when it had ended already, or is ending."""
        lease = self._ending_one(lease_id)
        if lease is None:
            return None
        try:
            returned = self._owner.unlease(lease.bdf, lease_id, lease.on_return is Return.RELEASE)
        finally:
            self._ended(lease_id)
        audit.info("lease return", **_fields(lease), returned=returned, reason=reason, by=lease.holder.describe())
        return lease

    def revoke(self, lease_id: str, reason: str, by: str) -> Lease:
        """An admin ends a lease: the holder is told, its vectors return as the lease asked."""
        lease = self._ending_one(lease_id)
        if lease is None:
            raise LeaseNotFound(lease_id)
        with self._lock:
            self._revoked[lease.bdf] += 1
        try:
            returned = self._owner.unlease(lease.bdf, lease_id, lease.on_return is Return.RELEASE)
        finally:
            self._ended(lease_id)
        audit.info("lease revoke", **_fields(lease), returned=returned, reason=reason, by=by)
        self.notify(lease_id, reason)
        return lease

    def _ending_one(self, lease_id: str) -> Lease | None:
        """Claim a held lease for ending; it stays listed until its vectors are back (_ended), so
        whoever sees it gone may rely on msixd holding them again. None if absent or ending."""
        with self._lock:
            lease = self._leases.get(lease_id)
            if lease is None or lease_id in self._ending:
                return None
            self._ending.add(lease_id)
            self._store.forget_lease(lease_id)
        return lease

    def _ended(self, lease_id: str) -> None:
        with self._lock:
            self._leases.pop(lease_id, None)
            self._ending.discard(lease_id)

    def _taken_back(self, lease_id: str, reason: str) -> None:
        """The Owner revoked a lease on its own (a forced change, the kernel asking for the device
        back); called under the device's lock: record, tell the transport, take no device lock."""
        with self._lock:
            if lease_id in self._ending:  # its holder or an admin is ending it already
                return
            lease = self._leases.pop(lease_id, None)
            if lease is None:  # being granted (it will be refused), or ended by its holder already
                if lease_id in self._granting:
                    self._granting[lease_id] = True
                return
            self._revoked[lease.bdf] += 1
            self._store.forget_lease(lease_id)
        audit.info("lease revoke", **_fields(lease), reason=reason, by="msixd")
        self.notify(lease_id, reason)


def facts(lease: Lease) -> dict[str, object]:
    """What the runtime facts keep of a lease, for the next msixd (msixd/service/adopt.py reads it)."""
    return {"bdf": lease.bdf, "vectors": list(lease.vectors), "irqs": list(lease.irqs), "uid": lease.holder.uid,
            "gid": lease.holder.gid, "pid": lease.holder.pid, "groups": sorted(lease.holder.groups),
            "since": lease.since, "device_fd": lease.device_fd, "on_return": lease.on_return.value,
            "grown": list(lease.grown)}


def _fields(lease: Lease) -> dict[str, object]:
    return {"lease": lease.id, "bdf": lease.bdf, "vectors": list(lease.vectors), "irqs": list(lease.irqs),
            "holder_uid": lease.holder.uid, "holder_pid": lease.holder.pid, "device_fd": lease.device_fd,
            "on_return": lease.on_return.value}
