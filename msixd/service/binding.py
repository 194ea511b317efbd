"""Handing devices to vfio-pci and back."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from msixd.errors import FailedPrecondition
from msixd.kernel import pci, pcibind
from msixd.kernel.roots import KernelRoots
from msixd.service.owner import Owner

log = structlog.get_logger(__name__)
# Drivers that may stay bound beside vfio-pci in a group: they claim no DMA
# ownership (vfio.rst: bridges are fine).
HARMLESS_DRIVERS = frozenset({"vfio-pci", "pcieport", "pci-stub"})


@dataclass(frozen=True)
class Bound:
    bdf: str
    previous_driver: str | None
    driver: str | None
    iommu_group: int
    unchanged: bool


@dataclass(frozen=True)
class Released:
    bdf: str
    driver: str | None
    vectors_released: int


class Binding:
    def __init__(self, roots: KernelRoots, owner: Owner) -> None:
        self._roots = roots
        self._owner = owner

    def bind(self, bdf: str) -> Bound:
        bdf = pci.parse_bdf(bdf)
        device = pci.read_device(self._roots, bdf)
        if device.iommu_group is None:
            raise FailedPrecondition(
                f"{bdf} has no IOMMU group: VFIO needs an active IOMMU (intel_iommu=on or amd_iommu=on)"
            )
        if device.driver == pcibind.VFIO_PCI:
            return Bound(bdf, device.driver, device.driver, device.iommu_group, unchanged=True)
        others = {
            member: pcibind.driver_of(self._roots, member)
            for member in pcibind.group_members(self._roots, device.iommu_group)
            if member != bdf
        }
        busy = {m: d for m, d in others.items() if d is not None and d not in HARMLESS_DRIVERS}
        if busy:
            named = ", ".join(f"{m} ({d})" for m, d in sorted(busy.items()))
            raise FailedPrecondition(
                f"IOMMU group {device.iommu_group} of {bdf} also holds devices bound to host drivers: {named}; "
                "bind or unbind them first"
            )
        # Remembered first: should msixd die half-way, release still knows where the device belongs.
        self._owner.remember_driver(bdf, device.driver)
        try:
            now = pcibind.bind_driver(self._roots, bdf, pcibind.VFIO_PCI)
        except pcibind.BindError as err:
            raise FailedPrecondition(f"{err}, {self._put_back(bdf, device.driver)}") from err
        if now != pcibind.VFIO_PCI:
            raise FailedPrecondition(
                f"vfio-pci did not take {bdf}, {self._put_back(bdf, device.driver)}; "
                "is the module loaded? (modprobe vfio-pci)"
            )
        log.info("bound to vfio-pci", bdf=bdf, previous_driver=device.driver, group=device.iommu_group)
        return Bound(bdf, device.driver, now, device.iommu_group, unchanged=False)

    def _put_back(self, bdf: str, previous: str | None) -> str:
        """Undo a bind that failed half-way: no driver_override left, the device back on its own driver.

        An override naming a driver that is not loaded leaves the device with no
        driver at all (pci_match_device() in drivers/pci/pci-driver.c matches
        nothing else): for a NIC, a network outage. Clearing it and probing
        again lets the bus match the device by its IDs, as before the bind.
        Returns how that went, for the error message.
        """
        try:
            if pcibind.driver_of(self._roots, bdf) == previous:  # it never left: only the override goes
                pcibind.set_driver_override(self._roots, bdf, "")
                now = previous
            else:
                now = pcibind.bind_driver(self._roots, bdf, "")
        except pcibind.BindError as err:
            now = pcibind.driver_of(self._roots, bdf)
            log.warning("could not undo a failed bind", bdf=bdf, expected=previous, driver=now, error=str(err))
        if now == previous:
            self._owner.forget_device(bdf)
            log.warning("bind failed; the device is back on its driver", bdf=bdf, driver=previous)
            return f"so it is back on {previous}" if previous else "so it is left without a driver, as it was"
        log.error("bind failed and the device is not back on its driver", bdf=bdf, expected=previous, driver=now)
        return f"and it could not be put back on {previous or 'no driver'} (driver now: {now or 'none'})"

    def release(self, bdf: str, force: bool = False) -> Released:
        """Give the device back to its driver; leased vectors only when forced (their leases revoked)."""
        bdf = pci.parse_bdf(bdf)
        pci.read_device(self._roots, bdf)  # DeviceNotFound first
        released = len(self._owner.disable(bdf, force=force)) if self._owner.owned(bdf) else 0
        state = self._owner.forget_device(bdf)
        previous = state.previous_driver if state else None
        if pcibind.driver_of(self._roots, bdf) != pcibind.VFIO_PCI:
            return Released(bdf, pcibind.driver_of(self._roots, bdf), released)
        driver = pcibind.bind_driver(self._roots, bdf, "")
        if previous and driver != previous:
            log.warning("device did not return to its driver", bdf=bdf, expected=previous, driver=driver)
        log.info("released", bdf=bdf, driver=driver, vectors=released)
        return Released(bdf, driver, released)
