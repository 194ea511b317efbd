"""Host-wide facts: CPUs, kernel release, and which kernel features are present."""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass

from msixd.kernel.cpulist import parse_kernel_cpulist
from msixd.kernel.files import list_dir, read_text
from msixd.kernel.roots import KernelRoots


@dataclass(frozen=True)
class Cpus:
    online: frozenset[int]
    possible: frozenset[int]
    isolated: frozenset[int]
    nohz_full: frozenset[int]


def read_cpus(roots: KernelRoots) -> Cpus:
    base = f"{roots.sysfs}/devices/system/cpu"

    def cpus(name: str) -> frozenset[int]:
        # isolated and nohz_full are empty (or absent without NO_HZ_FULL) when unused.
        text = read_text(f"{base}/{name}") or ""
        if text == "(null)":  # nohz_full before 5.x printed this when unset
            return frozenset()
        return parse_kernel_cpulist(f"{base}/{name}", text)

    return Cpus(
        online=cpus("online"),
        possible=cpus("possible"),
        isolated=cpus("isolated"),
        nohz_full=cpus("nohz_full"),
    )


def kernel_release(roots: KernelRoots) -> str:
    return read_text(f"{roots.procfs}/sys/kernel/osrelease") or ""


class State(enum.Enum):
    PRESENT = "present"
    ABSENT = "absent"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Feature:
    state: State
    detail: str


def vfio(roots: KernelRoots) -> Feature:
    node = f"{roots.dev}/vfio/vfio"
    if os.path.exists(node):
        return Feature(State.PRESENT, f"{node} exists")
    return Feature(State.ABSENT, f"{node} does not exist (modprobe vfio-pci)")


def vfio_pci(roots: KernelRoots) -> Feature:
    path = f"{roots.sysfs}/bus/pci/drivers/vfio-pci"
    if os.path.isdir(path):
        return Feature(State.PRESENT, "the vfio-pci driver is registered")
    return Feature(State.ABSENT, "the vfio-pci driver is not loaded (modprobe vfio-pci)")


def iommu_groups(roots: KernelRoots) -> Feature:
    groups = list_dir(f"{roots.sysfs}/kernel/iommu_groups")
    if groups:
        return Feature(State.PRESENT, f"{len(groups)} IOMMU groups")
    return Feature(
        State.ABSENT,
        "no IOMMU groups: no IOMMU is active (firmware DMAR/IVRS and intel_iommu=on / amd_iommu=on)",
    )


def debugfs_irq(roots: KernelRoots) -> Feature:
    if os.path.isdir(f"{roots.debugfs}/irq"):
        return Feature(State.PRESENT, f"{roots.debugfs}/irq exists")
    if list_dir(str(roots.debugfs)):
        return Feature(
            State.ABSENT, "debugfs is mounted but has no irq/: kernel built without CONFIG_GENERIC_IRQ_DEBUGFS"
        )
    return Feature(State.UNKNOWN, f"debugfs is not mounted at {roots.debugfs} (mount -t debugfs none {roots.debugfs})")


def vfio_noiommu(roots: KernelRoots) -> Feature:
    value = read_text(f"{roots.sysfs}/module/vfio/parameters/enable_unsafe_noiommu_mode")
    if value is None:
        if os.path.isdir(f"{roots.sysfs}/module/vfio"):
            return Feature(State.ABSENT, "vfio is built without CONFIG_VFIO_NOIOMMU")
        return Feature(State.UNKNOWN, "the vfio module is not loaded")
    if value == "Y":
        return Feature(State.PRESENT, "enable_unsafe_noiommu_mode=Y (taints the kernel)")
    return Feature(State.ABSENT, "available but off (vfio.enable_unsafe_noiommu_mode=N)")
