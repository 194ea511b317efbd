"""Small read-mostly helpers for tests that run inside a bench guest."""

from __future__ import annotations

import os
from pathlib import Path

SYS_PCI = Path("/sys/bus/pci/devices")


def find_device(vendor: int, device: int) -> str:
    """BDF of the first PCI function with these IDs (the bench's topology has one of each)."""
    for path in sorted(SYS_PCI.iterdir()):
        if int((path / "vendor").read_text(), 16) == vendor and int((path / "device").read_text(), 16) == device:
            return path.name
    raise LookupError(f"no PCI device {vendor:04x}:{device:04x} in this guest")


def driver_of(bdf: str) -> str | None:
    link = SYS_PCI / bdf / "driver"
    return os.path.basename(os.readlink(link)) if link.is_symlink() else None


def iommu_group(bdf: str) -> int:
    return int(os.path.basename(os.readlink(SYS_PCI / bdf / "iommu_group")))


def msi_irqs(bdf: str) -> list[int]:
    path = SYS_PCI / bdf / "msi_irqs"
    return sorted(int(name) for name in os.listdir(path)) if path.is_dir() else []


def rebind(bdf: str, driver: str | None) -> None:
    """Put a device back on a driver after a failed test (guest only)."""
    (SYS_PCI / bdf / "driver_override").write_text("\n")
    current = driver_of(bdf)
    if current:
        Path(f"/sys/bus/pci/drivers/{current}/unbind").write_text(bdf)
    if driver:
        Path("/sys/bus/pci/drivers_probe").write_text(bdf)


def raise_e1000e_interrupt(device_fd: int, vector: int) -> None:
    from tests.vm import rawvfio

    rawvfio.raise_e1000e_interrupt(device_fd, vector)


def quiesce_e1000e(device_fd: int) -> None:
    from tests.vm import rawvfio

    rawvfio.quiesce_e1000e(device_fd)


def bind_vfio(bdf: str) -> None:
    """driver_override + unbind + drivers_probe (Documentation/ABI/testing/sysfs-bus-pci; guest only)."""
    (SYS_PCI / bdf / "driver_override").write_text("vfio-pci")
    current = driver_of(bdf)
    if current:
        Path(f"/sys/bus/pci/drivers/{current}/unbind").write_text(bdf)
    Path("/sys/bus/pci/drivers_probe").write_text(bdf)
    assert driver_of(bdf) == "vfio-pci", f"{bdf} is on {driver_of(bdf)}, not vfio-pci"


def require_bench_guest() -> None:
    """Refuse to go on outside a bench guest: callers write to the kernel."""
    if "msixd_bench=1" not in Path("/proc/cmdline").read_text().split():
        raise SystemExit("refusing: this writes to the kernel and runs only inside a bench guest (msixd_bench=1)")


def netdev_up(bdf: str) -> str:
    """Bring up the device's network interface, so its driver requests its IRQs (guest only)."""
    import subprocess

    (name,) = os.listdir(SYS_PCI / bdf / "net")
    subprocess.run(["ip", "link", "set", name, "up"], check=True)
    return name


# "systemd" inside the guest that boots with systemd as PID 1, "" elsewhere.
IN_GUEST_KIND = os.environ.get("MSIXD_GUEST_KIND", "")
