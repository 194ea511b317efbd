"""Linux IRQs behind MSI/MSI-X vectors: msi_irqs/, /sys/kernel/irq/N and /proc/irq/N."""

from __future__ import annotations

import enum
import errno
import json
import os
import re
import stat
from dataclasses import dataclass

from msixd.errors import KernelFormatError, MsixdError
from msixd.kernel.cpulist import parse_kernel_cpulist
from msixd.kernel.files import S32_MAX, U32_MAX, U64_MAX, decimal, errno_of, list_dir, read_text, write_text
from msixd.kernel.pci import MSIX_TABLE_MAX, device_dir, pci_dev_id
from msixd.kernel.roots import KernelRoots

# Handler names vfio-pci gives its triggers: "vfio-msix[3](0000:00:09.0)".
_VFIO_ACTION = re.compile(r"vfio-msix?\[(\d+)\]\(([0-9a-f:.]+)\)")
# Chips of the global PCI MSI domain on kernels before per-device domains (6.1:
# "IR-PCI-MSI" under interrupt remapping, "PCI-MSI" without). hwirq there is
# pci_msi_domain_calc_hwirq(): (pci_domain_nr << 27) | (pci_dev_id << 11) | index.
GLOBAL_MSI_CHIPS = frozenset({"PCI-MSI", "IR-PCI-MSI"})
GLOBAL_HWIRQ_INDEX_MASK = 0x7FF


def per_device_chip(chip: str, bdf: str) -> bool:
    """Chip of a per-device MSI/MSI-X domain: "[<parent prefix>-]PCI-MSI[X]-<bdf>".

    msi_create_device_irq_domain() names it "%s%s-%s" from the parent's prefix
    ("IR-" for Intel/AMD remapping, "" without), the template chip name and the
    device name.
    """
    return chip.endswith(f"-{bdf}") and ("PCI-MSIX-" in chip or "PCI-MSI-" in chip)


def remapped_chip(chip: str) -> bool:
    return chip.startswith("IR-")


class IndexSource(enum.Enum):
    ACTION = "action"
    HWIRQ = "hwirq"
    GLOBAL_HWIRQ = "global_hwirq"
    ORDER = "order"


def vector_index(bdf: str, chip: str, hwirq: int | None, actions: tuple[str, ...]) -> tuple[int, IndexSource] | None:
    """The MSI-X table index of an IRQ, by the most robust rule that applies.

    None when no rule applies; the caller then falls back to the IRQ's position.
    """
    for action in actions:
        match = _VFIO_ACTION.fullmatch(action)
        index = decimal(match.group(1), 0, MSIX_TABLE_MAX - 1) if match and match.group(2) == bdf else None
        if index is not None:
            return index, IndexSource.ACTION
    if hwirq is None:
        return None
    if per_device_chip(chip, bdf):
        return (hwirq, IndexSource.HWIRQ) if hwirq < MSIX_TABLE_MAX else None
    if chip in GLOBAL_MSI_CHIPS and (hwirq >> 11) & 0xFFFF == pci_dev_id(bdf):
        return hwirq & GLOBAL_HWIRQ_INDEX_MASK, IndexSource.GLOBAL_HWIRQ
    return None


def msi_irqs(roots: KernelRoots, bdf: str) -> dict[int, str]:
    """IRQ number -> "msi" or "msix" for every entry of the device's msi_irqs/."""
    base = f"{device_dir(roots, bdf)}/msi_irqs"
    irqs: dict[int, str] = {}
    for name in list_dir(base):
        number = decimal(name, 0, U32_MAX)
        if number is None:
            continue
        mode = read_text(f"{base}/{name}")
        if mode is not None:  # freed between listing and reading
            irqs[number] = mode
    return dict(sorted(irqs.items()))


@dataclass(frozen=True)
class SysIrq:
    """/sys/kernel/irq/<irq>/ (kernel/irq/irqdesc.c)."""

    irq: int
    chip_name: str
    hwirq: int | None
    actions: tuple[str, ...]
    per_cpu_count: tuple[int, ...]
    type: str

    @property
    def total_count(self) -> int:
        return sum(self.per_cpu_count)


_COUNT_CHARS = b"0123456789,"
_NONZERO_DIGITS = "123456789"


def _counts(path: str, text: str) -> tuple[int, ...]:
    """per_cpu_count: one decimal count per possible CPU, comma-separated.

    On a host with a thousand CPUs this is most of an inventory's parsing (one
    number per CPU per IRQ), and nearly all of those numbers are 0: an MSI-X
    vector fires on its effective CPU and perhaps a few it was moved from.
    So the text is checked with C string operations only (bytes.translate
    deletes every allowed character; what is left, or an empty item, is an
    error), and a mostly-zero line is parsed by finding its few non-zero
    items with str.find; a dense one goes to the json module's C parser.
    Both are several times faster than a regular expression or int() per item.
    """
    if not text:
        return ()
    if text.encode().translate(None, _COUNT_CHARS) or ",," in text or text[0] == "," or text[-1] == ",":
        raise KernelFormatError(path, text, "expected comma-separated counts")
    items = text.count(",") + 1
    zero_items = text.count(",0") + (text[0] == "0")  # exact unless the kernel wrote a leading zero
    if (items - zero_items) * 16 > items:
        try:
            dense = tuple(json.loads(f"[{text}]"))
        except ValueError:  # leading zeros, which JSON refuses and the kernel never writes
            try:
                dense = tuple(map(int, text.split(",")))
            except ValueError:  # more digits than int() converts
                raise KernelFormatError(path, text, "a count beyond 64 bits") from None
        if max(dense) > U64_MAX:
            raise KernelFormatError(path, text, "a count beyond 64 bits")
        return dense
    counts = [0] * items
    find = text.find
    cpu = position = 0
    while True:
        starts = [i for i in map(find, _NONZERO_DIGITS, [position] * 9) if i >= 0]
        if not starts:
            return tuple(counts)
        start = min(starts)  # the first non-zero digit: a non-zero item begins at or before it
        cpu += text.count(",", position, start)
        end = find(",", start)
        end = len(text) if end < 0 else end
        if end - start > 20 or (count := int(text[start:end])) > U64_MAX:  # digits counted before int()
            raise KernelFormatError(path, text, "a count beyond 64 bits")
        counts[cpu] = count
        position = end


def read_sys_irq(roots: KernelRoots, irq: int) -> SysIrq | None:
    """None when the IRQ descriptor does not exist (freed, or never allocated)."""
    base = f"{roots.sysfs}/kernel/irq/{irq}"
    chip = read_text(f"{base}/chip_name")
    if chip is None:
        return None
    hwirq = read_text(f"{base}/hwirq") or ""
    actions = read_text(f"{base}/actions") or ""
    counts = read_text(f"{base}/per_cpu_count") or ""
    number = decimal(hwirq, 0, U64_MAX) if hwirq else None
    if hwirq and number is None:
        raise KernelFormatError(f"{base}/hwirq", hwirq, "expected a decimal number below 2^64")
    return SysIrq(
        irq=irq,
        chip_name=chip,
        hwirq=number,
        actions=tuple(a for a in actions.split(",") if a),
        per_cpu_count=_counts(f"{base}/per_cpu_count", counts),
        type=read_text(f"{base}/type") or "",
    )


@dataclass(frozen=True)
class ProcIrq:
    """/proc/irq/<irq>/ (kernel/irq/proc.c). Exists once a handler was ever requested."""

    irq: int
    affinity: frozenset[int]
    effective_affinity: frozenset[int]
    node: int
    settable: bool
    reason: str  # why not settable; empty when settable


def _cpus(path: str) -> frozenset[int]:
    return parse_kernel_cpulist(path, read_text(path) or "")


def read_proc_irq(roots: KernelRoots, irq: int) -> ProcIrq | None:
    """None when /proc/irq/<irq> does not exist (no handler was ever requested)."""
    base = f"{roots.procfs}/irq/{irq}"
    try:
        mode = os.stat(f"{base}/smp_affinity_list").st_mode
    except FileNotFoundError:
        return None
    # Since 6.12 proc.c makes smp_affinity(_list) 0444 when !irq_can_set_affinity_usr()
    # (managed, per-CPU or no-balancing IRQs, or a chip without irq_set_affinity).
    # Older kernels show 0644 for those too and refuse the write with EIO.
    settable = bool(mode & stat.S_IWUSR)
    node = decimal(read_text(f"{base}/node") or "-1", -1, S32_MAX)
    return ProcIrq(
        irq=irq,
        affinity=_cpus(f"{base}/smp_affinity_list"),
        effective_affinity=_cpus(f"{base}/effective_affinity_list"),
        node=-1 if node is None else node,
        settable=settable,
        reason="" if settable else "the kernel manages this IRQ's affinity (smp_affinity_list is read-only)",
    )


class AffinityRefused(MsixdError):
    """The kernel will not move this IRQ (EIO before 6.12, EPERM since; or 0444)."""

    def __init__(self, irq: int, reason: str) -> None:
        super().__init__(f"IRQ {irq}: the kernel refuses to move it: {reason}")
        self.irq = irq
        self.reason = reason


class AffinityRejected(MsixdError):
    """The kernel rejected this CPU set for the IRQ (EINVAL, ENOSPC...)."""

    def __init__(self, irq: int, cpus: str, reason: str) -> None:
        super().__init__(f"IRQ {irq}: the kernel rejected CPUs {cpus}: {reason}")
        self.irq = irq
        self.reason = reason


def write_affinity(roots: KernelRoots, irq: int, cpulist: str) -> None:
    """Write /proc/irq/<irq>/smp_affinity_list (kernel/irq/proc.c write_irq_affinity)."""
    path = f"{roots.procfs}/irq/{irq}/smp_affinity_list"
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise AffinityRefused(irq, f"{path} does not exist: no handler was ever requested") from None
    if not mode & stat.S_IWUSR:
        raise AffinityRefused(irq, "its affinity is managed by the kernel (smp_affinity_list is read-only)")
    try:
        write_text(path, cpulist)
    except OSError as err:
        code = errno_of(err)
        if code in (errno.EIO, errno.EPERM):
            raise AffinityRefused(irq, f"{os.strerror(code)} (managed, per-CPU or no-balancing IRQ)") from err
        raise AffinityRejected(irq, cpulist, os.strerror(code)) from err
