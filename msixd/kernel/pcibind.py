"""Binding PCI functions to drivers through sysfs (drivers/pci/pci-driver.c, drivers/base/bus.c).

Per device, never per ID: driver_override names the only driver that may take
the device, then drivers_probe asks the bus to match it. drivers_probe answers
success even when no driver attached, so the result is read back from the
device's driver link.
"""

from __future__ import annotations

import os

from msixd.errors import MsixdError
from msixd.kernel.files import errno_of, list_dir, read_link_name, write_text
from msixd.kernel.pci import device_dir
from msixd.kernel.roots import KernelRoots

VFIO_PCI = "vfio-pci"


class BindError(MsixdError):
    def __init__(self, bdf: str, action: str, reason: str) -> None:
        super().__init__(f"{bdf}: {action}: {reason}")
        self.bdf = bdf
        self.action = action


def _write(path: str, text: str, bdf: str, action: str) -> None:
    try:
        write_text(path, text)
    except OSError as err:
        raise BindError(bdf, action, f"{path}: {os.strerror(errno_of(err))}") from err


def driver_of(roots: KernelRoots, bdf: str) -> str | None:
    return read_link_name(f"{device_dir(roots, bdf)}/driver")


def group_members(roots: KernelRoots, group: int) -> list[str]:
    return sorted(list_dir(f"{roots.sysfs}/kernel/iommu_groups/{group}/devices"))


def unbind(roots: KernelRoots, bdf: str) -> None:
    driver = driver_of(roots, bdf)
    if driver is not None:
        _write(f"{roots.sysfs}/bus/pci/drivers/{driver}/unbind", bdf, bdf, f"unbind from {driver}")


def set_driver_override(roots: KernelRoots, bdf: str, driver: str) -> None:
    """Empty driver clears the override (written as a bare newline)."""
    _write(f"{device_dir(roots, bdf)}/driver_override", driver or "\n", bdf, "set driver_override")


def probe(roots: KernelRoots, bdf: str) -> str | None:
    """Ask the bus to match the device with a driver; return the driver that took it."""
    _write(f"{roots.sysfs}/bus/pci/drivers_probe", bdf, bdf, "drivers_probe")
    return driver_of(roots, bdf)


def bind_driver(roots: KernelRoots, bdf: str, driver: str) -> str | None:
    """Move the device to `driver` ("" = whatever matches by ID); return the driver it has now."""
    set_driver_override(roots, bdf, driver)
    unbind(roots, bdf)
    return probe(roots, bdf)
