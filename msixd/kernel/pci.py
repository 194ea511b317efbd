"""PCI functions from sysfs: identity, driver, IOMMU group, and the MSI-X capability.

Config space is read with pread(2), a few bytes where the answer needs them:
every dword read is a config access (a trap under virtualization, an MMIO read
on bare metal). What cannot change while the device keeps its sysfs identity
(its IDs, where its MSI-X capability sits and where its table and PBA are) is
read once per identity by a Devices reader; what can (Message Control's enable
and mask bits and table size, driver, IOMMU group, NUMA node, local CPUs) is
read on every call.
"""

from __future__ import annotations

import enum
import re
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, overload

from msixd.errors import DeviceNotFound, InvalidBdf, InvalidCpuList, KernelFormatError
from msixd.kernel.cpulist import parse_cpulist
from msixd.kernel.files import S32_MAX, decimal, inode, list_dir, read_at, read_link_name, read_text
from msixd.kernel.roots import KernelRoots

_BDF = re.compile(r"(?:([0-9a-f]{4}):)?([0-9a-f]{2}):([01][0-9a-f])\.([0-7])")

PCI_STATUS = 0x06
PCI_STATUS_CAP_LIST = 0x10
PCI_CAPABILITY_LIST = 0x34
PCI_CAP_ID_MSIX = 0x11
# Config space visible to readers without CAP_SYS_ADMIN (pci-sysfs.c).
UNPRIVILEGED_CONFIG_SIZE = 64
_MAX_CAPABILITIES = 48  # (256 - 64) / 4: a longer walk is a loop in the list
# The MSI-X capability: ID and next pointer, Message Control (u16), Table
# Offset/BIR (u32), PBA Offset/BIR (u32) (include/uapi/linux/pci_regs.h).
PCI_MSIX_FLAGS = 2
PCI_MSIX_TABLE = 4
_MSIX_CAPABILITY_SIZE = 12
# Message Control's table size field (PCI_MSIX_FLAGS_QSIZE, include/uapi/linux/pci_regs.h)
# has 11 bits: a function has at most 2048 MSI-X table entries.
MSIX_TABLE_MAX = 2048
# Kernel CPU lists repeat (a device's vectors often name the same CPUs, every
# device of a node the same local CPUs): each text is parsed once while it
# keeps coming back. A pure function of the text, so never stale. Bounded by
# the CPUs its sets hold, not their number: a list of every CPU is a large set,
# one CPU a small one, and a host has as many single-CPU lists as CPUs.
_CPULISTS: dict[str, frozenset[int]] = {}
_CPULISTS_HOLD = 1 << 18  # CPUs held in all the sets together, at most
_cpulists_held = 0


def cpulist(text: str) -> frozenset[int]:
    """parse_cpulist, remembered. Raises InvalidCpuList."""
    global _cpulists_held
    cpus = _CPULISTS.get(text)
    if cpus is None:
        cpus = parse_cpulist(text)
        if _cpulists_held + len(cpus) + 1 > _CPULISTS_HOLD:
            _CPULISTS.clear()
            _cpulists_held = 0
        _CPULISTS[text] = cpus
        _cpulists_held += len(cpus) + 1
    return cpus


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
        return cls.from_registers(offset, control, table, pba)

    @classmethod
    def from_registers(cls, offset: int, control: int, table: int, pba: int) -> MsixCapability:
        """From Message Control and the Table and PBA Offset/BIR registers (PCI_MSIX_FLAGS_*)."""
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


# Reads `size` bytes of config space at `offset`: fewer at the end of what the
# reader may see, None when the file cannot be read at all.
ConfigReader = Callable[[int, int], "bytes | None"]


def walk_to_msix(read: ConfigReader) -> tuple[MsixProbe, int]:
    """The MSI-X capability's offset, found with the fewest reads: Status, the capability
    pointer, then each capability's ID and next pointer (two bytes) until MSI-X.

    Config space the reader may not see (64 bytes for readers without
    CAP_SYS_ADMIN, pci-sysfs.c pci_read_config) ends the walk as UNREADABLE,
    never ABSENT. Offset 0 unless PRESENT.
    """
    status = read(PCI_STATUS, 2)
    if status is None or len(status) < 2:
        return MsixProbe.UNREADABLE, 0
    if not status[0] & PCI_STATUS_CAP_LIST:
        return MsixProbe.ABSENT, 0
    head = read(PCI_CAPABILITY_LIST, 1)
    if not head:
        return MsixProbe.UNREADABLE, 0
    pointer = head[0] & 0xFC
    for _ in range(_MAX_CAPABILITIES):
        if pointer == 0:
            return MsixProbe.ABSENT, 0
        header = read(pointer, 2)
        if header is None or len(header) < 2:
            return MsixProbe.UNREADABLE, 0
        if header[0] == PCI_CAP_ID_MSIX:
            return MsixProbe.PRESENT, pointer
        pointer = header[1] & 0xFC
    return MsixProbe.ABSENT, 0


def find_msix(config: bytes) -> tuple[MsixProbe, MsixCapability | None]:
    """Walk the capability list of a config-space image for the MSI-X capability.

    A short image (64 bytes for readers without CAP_SYS_ADMIN) cannot show the
    list, and a walk that leaves the image cannot finish: both are UNREADABLE,
    never ABSENT.
    """
    probe, offset = walk_to_msix(lambda at, size: config[at : at + size])
    if probe is not MsixProbe.PRESENT:
        return probe, None
    if offset + _MSIX_CAPABILITY_SIZE > len(config):
        return MsixProbe.UNREADABLE, None
    return MsixProbe.PRESENT, MsixCapability.from_config(config, offset)


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


def iommu_name(roots: KernelRoots, bdf: str) -> str | None:
    """The IOMMU device serving the function (its `iommu` link), e.g. "dmar0"; None without one."""
    return read_link_name(f"{device_dir(roots, bdf)}/iommu")


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


@dataclass(frozen=True)
class FixedFacts:
    """What cannot change while a PCI function keeps its sysfs identity (the inode of its
    directory, see device_identity).

    The IDs are pci_dev fields set when the kernel enumerated the function
    (drivers/pci/probe.c pci_setup_device; quirks run then too), which pci-sysfs.c
    shows; where the capabilities sit, and the Table and PBA Offset/BIR registers,
    are read-only in hardware (PCIe Base Specification, MSI-X Capability).
    Message Control is not here: its enable and mask bits change with the
    driver, and its table size with sriov_vf_msix_count (drivers/pci/iov.c).
    """

    identity: int
    vendor_id: int
    device_id: int
    class_code: int
    subsystem_vendor_id: int
    subsystem_device_id: int
    msix_probe: MsixProbe
    msix_offset: int  # 0 unless msix_probe is PRESENT
    msix_table: int  # the Table Offset/BIR register
    msix_pba: int  # the PBA Offset/BIR register


def _fixed_facts(base: str, identity: int) -> FixedFacts | None:
    """The function's fixed facts, read whole (its IDs, then a walk of its capability
    list with small reads). None when its config file cannot be read: it went away."""
    config = f"{base}/config"
    seen: list[bool] = []

    def read(offset: int, size: int) -> bytes | None:
        data = read_at(config, offset, size)
        seen.append(data is not None)
        return data

    probe, offset = walk_to_msix(read)
    if not seen[0]:
        return None
    table = pba = 0
    if probe is MsixProbe.PRESENT:
        registers = read(offset + PCI_MSIX_TABLE, 8)
        if registers is None:
            return None
        if len(registers) < 8:
            probe, offset = MsixProbe.UNREADABLE, 0
        else:
            table, pba = struct.unpack("<II", registers)
    return FixedFacts(
        identity=identity,
        vendor_id=_hex(base, "vendor"),
        device_id=_hex(base, "device"),
        class_code=_hex(base, "class"),
        subsystem_vendor_id=_hex(base, "subsystem_vendor"),
        subsystem_device_id=_hex(base, "subsystem_device"),
        msix_probe=probe,
        msix_offset=offset,
        msix_table=table,
        msix_pba=pba,
    )


class Devices:
    """Reads PCI functions, remembering each one's FixedFacts for as long as it keeps its identity.

    Every read stats the function's directory: a new inode (removed and found
    again by a rescan, a re-plug) drops what was remembered, and a function
    that is gone is forgotten. Everything else is read again on every call.
    Safe to share between threads: a fact set is replaced whole, never changed.
    """

    def __init__(self, roots: KernelRoots) -> None:
        self._roots = roots
        self._facts: dict[str, FixedFacts] = {}
        self._lock = threading.Lock()

    def known(self, bdf: str) -> FixedFacts | None:
        """What is remembered of bdf now (for tests and the benchmarks)."""
        return self._facts.get(bdf)

    def keep_only(self, bdfs: set[str]) -> None:
        """Forget every function not in bdfs (a listing saw them gone)."""
        with self._lock:
            for bdf in [b for b in self._facts if b not in bdfs]:
                del self._facts[bdf]

    @overload
    def read(self, bdf: str, msix_only: Literal[False] = False) -> PciDevice: ...

    @overload
    def read(self, bdf: str, msix_only: bool) -> PciDevice | None: ...

    def read(self, bdf: str, msix_only: bool = False) -> PciDevice | None:
        """Read one PCI function. Raises DeviceNotFound when it does not exist (or vanished).

        With msix_only, a function known to have no MSI-X capability gives None.
        """
        base = device_dir(self._roots, bdf)
        identity = inode(base)
        if identity is None:
            with self._lock:
                self._facts.pop(bdf, None)
            raise DeviceNotFound(bdf)
        facts = self._facts.get(bdf)
        if facts is None or facts.identity != identity:
            facts = _fixed_facts(base, identity)
            if facts is None:
                raise DeviceNotFound(bdf)
            if inode(base) == identity:  # not replaced while it was read: safe to remember
                with self._lock:
                    self._facts[bdf] = facts
        if msix_only and facts.msix_probe is MsixProbe.ABSENT:
            return None
        probe, msix = facts.msix_probe, None
        if probe is MsixProbe.PRESENT:
            control = read_at(f"{base}/config", facts.msix_offset + PCI_MSIX_FLAGS, 2)
            if control is None:
                raise DeviceNotFound(bdf)
            if len(control) < 2:
                probe = MsixProbe.UNREADABLE
            else:
                msix = MsixCapability.from_registers(
                    facts.msix_offset, control[0] | control[1] << 8, facts.msix_table, facts.msix_pba)
        group = read_link_name(f"{base}/iommu_group")
        numa = read_text(f"{base}/numa_node")
        numa_node = decimal(numa, -1, S32_MAX) if numa else None
        if numa_node is None:
            numa_node = -1  # unknown
        local = read_text(f"{base}/local_cpulist") or ""
        try:
            local_cpus = cpulist(local)
        except InvalidCpuList as err:
            raise KernelFormatError(f"{base}/local_cpulist", local, err.reason) from None
        return PciDevice(
            bdf=bdf,
            vendor_id=facts.vendor_id,
            device_id=facts.device_id,
            class_code=facts.class_code,
            subsystem_vendor_id=facts.subsystem_vendor_id,
            subsystem_device_id=facts.subsystem_device_id,
            driver=read_link_name(f"{base}/driver"),
            iommu_group=decimal(group, 0, S32_MAX) if group else None,
            numa_node=numa_node,
            local_cpus=local_cpus,
            msix_probe=probe,
            msix=msix,
        )


@overload
def read_device(roots: KernelRoots, bdf: str, msix_only: Literal[False] = False) -> PciDevice: ...


@overload
def read_device(roots: KernelRoots, bdf: str, msix_only: bool) -> PciDevice | None: ...


def read_device(roots: KernelRoots, bdf: str, msix_only: bool = False) -> PciDevice | None:
    """Read one PCI function, remembering nothing. Raises DeviceNotFound when it does not exist
    (or vanished). With msix_only, a function with no MSI-X capability gives None."""
    return Devices(roots).read(bdf, msix_only)
