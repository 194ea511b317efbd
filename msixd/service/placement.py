"""Placing MSI-X vectors on CPUs through /proc/irq/<irq>/smp_affinity_list.

Works for every MSI-X vector the kernel lets user space move, owned or not.
Following TuneD's irq plugin: verify after writing (effective_affinity is read
back), and report an IRQ the kernel will not move as such instead of retrying.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from msixd.errors import FailedPrecondition, InvalidArgument, VectorNotFound
from msixd.kernel import irq as kirq
from msixd.kernel import system
from msixd.kernel.cpulist import format_cpulist, parse_cpulist
from msixd.kernel.roots import KernelRoots
from msixd.service.inventory import Inventory
from msixd.service.model import Vector
from msixd.service.owner import Owner

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Placed:
    bdf: str
    vector: int
    irq: int
    # Read back after the write; in a dry run, what would be written.
    affinity: frozenset[int]
    # Read back after the write; in a dry run, where the kernel routes the IRQ now.
    effective_affinity: frozenset[int]
    # smp_affinity_list before: what the placement replaced (or would).
    previous_affinity: frozenset[int] = frozenset()
    dry_run: bool = False


@dataclass(frozen=True)
class PlannedPlacement:
    vector: int
    irq: int
    cpu: int
    effective_affinity: frozenset[int] = frozenset()
    error: str = ""


class Placement:
    def __init__(self, roots: KernelRoots, inventory: Inventory, owner: Owner) -> None:
        self._roots = roots
        self._inventory = inventory
        self._owner = owner
        # CPUs the operator's configuration forbids, whatever the request says.
        self.banned: frozenset[int] = frozenset()
        # A write and its record in the saved state happen as one: concurrent
        # placements of a vector must not leave the kernel and the state apart.
        self._lock = threading.Lock()
        # (bdf, MSI-X index) -> the policy rule that places the vector, if one does (set by the
        # reconciler): a placement by hand would only be put back, so it is refused.
        self.claimed: Callable[[str, int], str | None] = lambda bdf, index: None

    def _check_unclaimed(self, bdf: str, indexes: list[int]) -> None:
        for index in indexes:
            rule = self.claimed(bdf, index)
            if rule:
                raise FailedPrecondition(
                    f"{bdf} vector {index} is placed by policy rule {rule}: msixd would put it back; change the "
                    "rule (or make it place = \"leave\") and run msixctl apply"
                )

    def _check_cpus(self, cpus: frozenset[int], force: bool) -> None:
        topology = system.read_cpus(self._roots)
        if not cpus:
            raise InvalidArgument("the CPU list is empty")
        banned = cpus & self.banned
        if banned:
            raise FailedPrecondition(
                f"CPU {format_cpulist(banned)} {'is' if len(banned) == 1 else 'are'} banned by msixd's "
                "configuration (banned_cpus)"
            )
        offline = cpus - topology.online
        if offline:
            raise InvalidArgument(
                f"CPU {format_cpulist(offline)} {'is' if len(offline) == 1 else 'are'} not online "
                f"(online: {format_cpulist(topology.online)})"
            )
        reserved = cpus & (topology.isolated | topology.nohz_full)
        if reserved and not force:
            raise FailedPrecondition(
                f"CPU {format_cpulist(reserved)} {'is' if len(reserved) == 1 else 'are'} isolated or nohz_full; "
                "interrupts there disturb the isolated workload (use --force to place it anyway)"
            )

    def set_affinity(self, bdf: str, vector: int, cpus_text: str, force: bool = False,
                     dry_run: bool = False) -> Placed:
        """Place one vector; with dry_run, check the same and answer what would be written."""
        cpus = parse_cpulist(cpus_text)
        self._check_cpus(cpus, force)
        device = self._inventory.get_device(bdf)
        target = next((v for v in device.vectors if v.index == vector), None)
        if target is None:
            raise VectorNotFound(device.pci.bdf, vector)
        self._check_unclaimed(device.pci.bdf, [target.index])
        if dry_run:
            self._check_settable(target)
            return Placed(device.pci.bdf, target.index, target.irq, cpus, target.effective_affinity, target.affinity,
                          dry_run=True)
        return self._place(device.pci.bdf, target, cpus)

    @staticmethod
    def _check_settable(vector: Vector) -> None:
        if not vector.affinity_settable:
            raise kirq.AffinityRefused(vector.irq, vector.affinity_reason)

    def _place(self, bdf: str, vector: Vector, cpus: frozenset[int]) -> Placed:
        self._check_settable(vector)
        return self.place(bdf, vector.index, vector.irq, cpus, vector.affinity)

    def place(self, bdf: str, index: int, irq: int, cpus: frozenset[int], previous: frozenset[int]) -> Placed:
        """Write one vector's affinity, read it back, and record it (for an owned vector).

        The path of every placement, the reconciler's too; the caller has checked the CPUs.
        Raises AffinityRefused (the kernel will not move it) or AffinityRejected.
        """
        # The device's lock first (msixd/service/owner.py gives the order): a re-enable of an
        # owned device re-applies its vectors' affinities under it.
        with self._owner.placing(bdf), self._lock:
            kirq.write_affinity(self._roots, irq, format_cpulist(cpus))
            after = kirq.read_proc_irq(self._roots, irq)
            self._owner.remember_affinity(bdf, index, cpus)
        placed = Placed(
            bdf=bdf,
            vector=index,
            irq=irq,
            affinity=after.affinity if after else cpus,
            effective_affinity=after.effective_affinity if after else frozenset(),
            previous_affinity=previous,
        )
        log.info("affinity set", bdf=bdf, vector=index, irq=irq, cpus=format_cpulist(cpus),
                 effective=format_cpulist(placed.effective_affinity))
        return placed

    def spread(
        self, bdf: str, cpus_text: str = "", dry_run: bool = False, force: bool = False
    ) -> tuple[frozenset[int], list[PlannedPlacement]]:
        """One vector per CPU, round-robin by MSI-X index over the chosen CPUs."""
        device = self._inventory.get_device(bdf)
        topology = system.read_cpus(self._roots)
        if cpus_text:
            cpus = parse_cpulist(cpus_text)
            self._check_cpus(cpus, force)
        else:
            local = device.pci.local_cpus or topology.online
            cpus = (local & topology.online) - topology.isolated - topology.nohz_full - self.banned
            if not cpus:
                raise FailedPrecondition(
                    f"{device.pci.bdf}'s local CPUs ({format_cpulist(local)}) are all offline, isolated, "
                    "nohz_full or banned: name CPUs with --cpus"
                )
        order = sorted(cpus)
        movable = [v for v in device.vectors if v.affinity_settable]
        self._check_unclaimed(device.pci.bdf, [v.index for v in movable])
        if not movable:
            raise FailedPrecondition(f"{device.pci.bdf} has no vector whose affinity the kernel lets user space set")
        plan = []
        for position, vector in enumerate(movable):
            cpu = order[position % len(order)]
            if dry_run:
                plan.append(PlannedPlacement(vector.index, vector.irq, cpu))
                continue
            try:
                placed = self._place(device.pci.bdf, vector, frozenset({cpu}))
                plan.append(PlannedPlacement(vector.index, vector.irq, cpu, placed.effective_affinity))
            except (kirq.AffinityRefused, kirq.AffinityRejected) as err:
                plan.append(PlannedPlacement(vector.index, vector.irq, cpu, error=str(err)))
        return cpus, plan
