"""PCI functions from sysfs: identity, driver, IOMMU group, and the MSI-X capability."""

from __future__ import annotations

import enum
import re
import struct
from dataclasses import dataclass
from typing import Literal, overload

from msixd.errors import DeviceNotFound, InvalidBdf, KernelFormatError
from msixd.kernel.cpulist import parse_kernel_cpulist
from msixd.kernel.files import S32_MAX, decimal, inode, list_dir, read_bytes, read_link_name, read_text
from msixd.kernel.roots import KernelRoots

_BDF = re.compile(r"(?:([0-9a-f]{4}):)?([0-9a-f]{2}):([01][0-9a-f])\.([0-7])")

PCI_STATUS = 0x06
PCI_STATUS_CAP_LIST = 0x10
PCI_CAPABILITY_LIST = 0x34
PCI_CAP_ID_MSIX = 0x11
# Config space visible to readers without CAP_SYS_ADMIN (pci-sysfs.c).
UNPRIVILEGED_CONFIG_SIZE = 64
_MAX_CAPABILITIES = 48  # (256 - 64) / 4: a longer walk is a loop in the list
# Message Control's table size field (PCI_MSIX_FLAGS_QSIZE, include/uapi/linux/pci_regs.h)
# has 11 bits: a function has at most 2048 MSI-X table entries.
MSIX_TABLE_MAX = 2048
_HEX_DIGITS = {"vendor": 4, "device": 4, "subsystem_vendor": 4, "subsystem_device": 4, "class": 6}


def parse_bdf(text: str) -> str:
    """Normalise a PCI address to "dddd:bb:dd.f"; "bb:dd.f" means domain 0000.

    Raises InvalidBdf before the text can become part of any path.
    """
    match = _BDF.fullmatch(text.strip().lower()) if len(text) <= 16 else None
    if match is None:
        raise InvalidBdf(text)
    domain, bus, device, function = match.groups()
    return f"{domain or '0000'}:{bus}:{device}.{function}"


def pci_dev_id(bdf: str) -> int:
    """The kernel's pci_dev_id(): bus << 8 | devfn."""
    _, bus, devfn = bdf.split(":")
    device, function = devfn.split(".")
    return int(bus, 16) << 8 | int(device, 16) << 3 | int(function)


class MsixProbe(enum.Enum):
    PRESENT = "present"
    ABSENT = "absent"
    UNREADABLE = "unreadable"


@dataclass(frozen=True)
class MsixCapability:
    offset: int
    table_size: int
    enabled: bool
    function_masked: bool
    table_bir: int
    table_offset: int
    pba_bir: int
    pba_offset: int

    @classmethod
    def from_config(cls, config: bytes, offset: int) -> MsixCapability:
        control, table, pba = struct.unpack_from("<HII", config, offset + 2)
        return cls(
            offset=offset,
            table_size=(control & 0x07FF) + 1,
            enabled=bool(control & 0x8000),
            function_masked=bool(control & 0x4000),
            table_bir=table & 0x7,
            table_offset=table & ~0x7 & 0xFFFFFFFF,
            pba_bir=pba & 0x7,
            pba_offset=pba & ~0x7 & 0xFFFFFFFF,
        )


def find_msix(config: bytes) -> tuple[MsixProbe, MsixCapability | None]:
    """Walk the capability list of a config-space image for the MSI-X capability.

    A short image (64 bytes for readers without CAP_SYS_ADMIN) cannot show the
    list, and a walk that leaves the image cannot finish: both are UNREADABLE,
    never ABSENT.
    """
    if len(config) < PCI_CAPABILITY_LIST + 1:
        return MsixProbe.UNREADABLE, None
    (status,) = struct.unpack_from("<H", config, PCI_STATUS)
    if not status & PCI_STATUS_CAP_LIST:
        return MsixProbe.ABSENT, None
    pointer = config[PCI_CAPABILITY_LIST] & 0xFC
    for _ in range(_MAX_CAPABILITIES):
        if pointer == 0:
            return MsixProbe.ABSENT, None
        if pointer + 12 > len(config):
            return MsixProbe.UNREADABLE, None
        if config[pointer] == PCI_CAP_ID_MSIX:
            return MsixProbe.PRESENT, MsixCapability.from_config(config, pointer)
        pointer = config[pointer + 1] & 0xFC
    return MsixProbe.ABSENT, None


@dataclass(frozen=True)
class PciDevice:
    bdf: str
    vendor_id: int
    device_id: int
    class_code: int
    subsystem_vendor_id: int
    subsystem_device_id: int
    driver: str | None
    iommu_group: int | None
    iommu: str | None  # the IOMMU device serving it, e.g. "dmar0"
    numa_node: int
    local_cpus: frozenset[int]
    msix_probe: MsixProbe
    msix: MsixCapability | None


def device_dir(roots: KernelRoots, bdf: str) -> str:
    return f"{roots.sysfs}/bus/pci/devices/{bdf}"


def device_identity(roots: KernelRoots, bdf: str) -> int | None:
    """Which incarnation of the device is there now: changes when it is removed and
    found again by a rescan, not when drivers come and go. None: not there."""
    return inode(device_dir(roots, bdf))


def iommu_group_name(roots: KernelRoots, group: int) -> str | None:
    """The IOMMU group's name, if it has one: "vfio-noiommu" for a group vfio made for a device
    without an IOMMU (drivers/vfio/group.c, vfio_noiommu_group_alloc)."""
    return read_text(f"{roots.sysfs}/kernel/iommu_groups/{group}/name")


def list_bdfs(roots: KernelRoots) -> list[str]:
    return sorted(list_dir(f"{roots.sysfs}/bus/pci/devices"))


def _hex(base: str, name: str) -> int:
    """A config-space ID as pci-sysfs.c shows it ("0x%04x", the class "0x%06x")."""
    text = read_text(f"{base}/{name}")
    if text is None:
        return 0
    digits = _HEX_DIGITS[name]
    if re.fullmatch(rf"(?:0x)?[0-9a-fA-F]{{1,{digits}}}", text) is None:
        raise KernelFormatError(f"{base}/{name}", text, f"expected a hex number of at most {digits} digits")
    return int(text, 16)


@overload
def read_device(roots: KernelRoots, bdf: str, msix_only: Literal[False] = False) -> PciDevice: ...


@overload
def read_device(roots: KernelRoots, bdf: str, msix_only: bool) -> PciDevice | None: ...


def read_device(roots: KernelRoots, bdf: str, msix_only: bool = False) -> PciDevice | None:
    """Read one PCI function. Raises DeviceNotFound when it does not exist (or vanished).

    With msix_only, a function whose config space shows no MSI-X capability
    costs one read and gives None.
    """
    base = device_dir(roots, bdf)
    config = read_bytes(f"{base}/config")
    if config is None:
        raise DeviceNotFound(bdf)
    probe, msix = find_msix(config)
    if msix_only and probe is MsixProbe.ABSENT:
        return None
    group = read_link_name(f"{base}/iommu_group")
    numa = read_text(f"{base}/numa_node")
    numa_node = decimal(numa, -1, S32_MAX) if numa else None
    if numa_node is None:
        numa_node = -1  # unknown
    local_cpus = parse_kernel_cpulist(f"{base}/local_cpulist", read_text(f"{base}/local_cpulist") or "")
    return PciDevice(
        bdf=bdf,
        vendor_id=_hex(base, "vendor"),
        device_id=_hex(base, "device"),
        class_code=_hex(base, "class"),
        subsystem_vendor_id=_hex(base, "subsystem_vendor"),
        subsystem_device_id=_hex(base, "subsystem_device"),
        driver=read_link_name(f"{base}/driver"),
        iommu_group=decimal(group, 0, S32_MAX) if group else None,
        iommu=read_link_name(f"{base}/iommu"),
        numa_node=numa_node,
        local_cpus=local_cpus,
        msix_probe=probe,
        msix=msix,
    )
