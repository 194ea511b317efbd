"""Linux IRQs behind MSI/MSI-X vectors: msi_irqs/, /sys/kernel/irq/N and /proc/irq/N."""

from __future__ import annotations

import enum
import errno
import json
import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple, overload

from msixd.errors import InvalidCpuList, KernelFormatError, MsixdError
from msixd.kernel.files import (
    S32_MAX,
    U32_MAX,
    U64_MAX,
    decimal,
    errno_of,
    list_dir,
    read_bytes,
    read_text,
    read_text_mode,
    write_text,
)
from msixd.kernel.pci import MSIX_TABLE_MAX, cpulist, device_dir, pci_dev_id
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
        match = _VFIO_ACTION.fullmatch(action) if action.startswith("vfio-msi") else None
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


def msi_irq_numbers(roots: KernelRoots, bdf: str) -> list[int]:
    """The IRQs listed in the device's msi_irqs/, in order, without reading their files."""
    numbers = (decimal(name, 0, U32_MAX) for name in list_dir(f"{device_dir(roots, bdf)}/msi_irqs"))
    return sorted(n for n in numbers if n is not None)


def msi_mode(roots: KernelRoots, bdf: str, irqs: list[int]) -> str:
    """"msi" or "msix": what msi_irqs/<irq> says for the first of irqs still there ("" for none).

    One file answers for all: the mode is the device's, not the IRQ's
    (kernel/irq/msi.c msi_mode_show shows pci_dev->msix_enabled, "MSI vs. MSIX
    is per device not per interrupt"; and a device never has MSI and MSI-X
    enabled at once, drivers/pci/msi/msi.c).
    """
    base = f"{device_dir(roots, bdf)}/msi_irqs"
    for number in irqs:
        mode = read_text(f"{base}/{number}")
        if mode is not None:  # freed between listing and reading: ask the next
            return mode
    return ""


def read_chip_name(roots: KernelRoots, irq: int) -> str | None:
    """/sys/kernel/irq/<irq>/chip_name alone; None when the IRQ does not exist."""
    return read_text(f"{roots.sysfs}/kernel/irq/{irq}/chip_name")


class CpuCounts(Sequence[int]):
    """Interrupts per CPU, one count per possible CPU, as per_cpu_count lists them.

    Nearly all of them are 0 on a large host (an MSI-X vector fires on its
    effective CPU and perhaps a few it was moved from), so a mostly-zero list is
    kept as its size and its non-zero (cpu, count) pairs, a dense one as is.
    A sequence like any other to its readers; `nonzero` and `total` cost
    nothing more for the sparse form.
    """

    __slots__ = ("_size", "_pairs", "_dense", "total")

    def __init__(self, size: int, pairs: tuple[tuple[int, int], ...] = (),
                 dense: tuple[int, ...] | None = None, total: int | None = None) -> None:
        """`pairs` in CPU order, or `dense`; `total` when the caller summed them already."""
        self._size = size
        self._pairs = pairs
        self._dense = dense
        if total is None:
            total = sum(dense) if dense is not None else sum(count for _, count in pairs)
        self.total = total

    @classmethod
    def of(cls, counts: Iterable[int]) -> CpuCounts:
        values = tuple(counts)
        return cls(len(values), dense=values)

    @property
    def dense(self) -> tuple[int, ...] | None:
        """The counts as they are kept when they are mostly non-zero; None when kept sparse."""
        return self._dense

    @property
    def nonzero(self) -> tuple[tuple[int, int], ...]:
        """(cpu, count) for every CPU with a count, in CPU order."""
        if self._dense is None:
            return self._pairs
        return tuple((cpu, count) for cpu, count in enumerate(self._dense) if count)

    def _values(self) -> tuple[int, ...]:
        if self._dense is not None:
            return self._dense
        values = [0] * self._size
        for cpu, count in self._pairs:
            values[cpu] = count
        return tuple(values)

    def __len__(self) -> int:
        return self._size

    @overload
    def __getitem__(self, index: int) -> int: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[int, ...]: ...

    def __getitem__(self, index: int | slice) -> int | tuple[int, ...]:
        return self._values()[index]

    def __iter__(self) -> Iterator[int]:
        return iter(self._values())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CpuCounts):
            return self._size == other._size and self.nonzero == other.nonzero
        if isinstance(other, Sequence):
            return len(other) == self._size and self._values() == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self._size, self.nonzero))

    def __repr__(self) -> str:
        return f"CpuCounts({self._size}, nonzero={self.nonzero!r})"


NO_COUNTS = CpuCounts(0)


class SysIrq(NamedTuple):
    """/sys/kernel/irq/<irq>/ (kernel/irq/irqdesc.c).

    A named tuple, not a dataclass: an inventory makes two of these values per
    vector, and a tuple is made in a fraction of a frozen dataclass's time.
    """

    irq: int
    chip_name: str
    hwirq: int | None
    actions: tuple[str, ...]
    per_cpu_count: CpuCounts
    type: str

    @property
    def total_count(self) -> int:
        return self.per_cpu_count.total


# per_cpu_count mapped for scanning: digits 1-9 become X (each non-zero item begins with one),
# 0 and the comma stay, anything else becomes ?.
_SCAN = bytes(ord("X") if chr(b) in "123456789" else b if chr(b) in "0," else ord("?") for b in range(256))
# Zero items as the kernel writes them: a run of them must be exactly this.
_ZEROS = memoryview(b"0," * 8192)
_COUNT_CHARS = b"0123456789,"


def _counts(path: str, text: str | bytes) -> CpuCounts:
    """per_cpu_count: one decimal count per possible CPU, comma-separated (kernel/irq/irqdesc.c
    per_cpu_count_show).

    On a host with a thousand CPUs this is most of an inventory's parsing (one
    number per CPU per IRQ), and nearly all of those numbers are 0. So a line is
    taken apart with C string operations only: one bytes.translate marks the
    first digit of every non-zero item, find() jumps from one to the next, the
    run of zero items between them is compared whole with zero items as the
    kernel writes them ("0,0,..."), and only the few non-zero items are
    converted. A line that is not as the kernel writes it (an empty item, a
    leading zero, anything but digits and commas) or that is not mostly zeros
    goes to the careful parse (the json module's C parser for a dense line).
    """
    data = text.encode() if isinstance(text, str) else text
    if not data:
        return NO_COUNTS
    return _sparse_counts(path, data) or _dense_counts(path, _shown(data))


def _shown(text: str | bytes) -> str:
    return text if isinstance(text, str) else text.decode("ascii", "replace")


def _sparse_counts(path: str, data: bytes) -> CpuCounts | None:
    """The non-zero items of a mostly-zero line, or None for _dense_counts to decide."""
    scan = data.translate(_SCAN)
    find, startswith = scan.find, scan.startswith
    size = len(scan)
    most = max((size + 1) // 32, 4)  # more non-zero items than this: not mostly zeros (or not a short line)
    pairs: list[tuple[int, int]] = []
    cpu = total = position = 0  # position: where the next item begins
    while (start := find(b"X", position)) >= 0:
        run = start - position  # zero items, each with its comma
        if run % 2 or not startswith(_ZEROS[:run], position) or len(pairs) == most:
            return None
        cpu += run // 2
        end = find(b",", start)
        end = size if end < 0 else end
        digits = data[start:end]
        if not digits.isdigit():
            return None
        if len(digits) > 20 or (value := int(digits)) > U64_MAX:  # digits counted before int()
            raise KernelFormatError(path, _shown(data), "a count beyond 64 bits")
        pairs.append((cpu, value))
        total += value
        cpu += 1
        position = end + 1
    if position <= size:  # zero items last: "0,...,0", no comma after the last
        run = size - position
        if run % 2 != 1 or not startswith(_ZEROS[:run], position):
            return None
        cpu += run // 2 + 1
    return CpuCounts(cpu, tuple(pairs), total=total)


def _dense_counts(path: str, text: str) -> CpuCounts:
    if text.encode().translate(None, _COUNT_CHARS) or ",," in text or text[0] == "," or text[-1] == ",":
        raise KernelFormatError(path, text, "expected comma-separated counts")
    try:
        dense = tuple(json.loads(f"[{text}]"))
    except ValueError:  # leading zeros, which JSON refuses and the kernel never writes
        try:
            dense = tuple(map(int, text.split(",")))
        except ValueError:  # more digits than int() converts
            raise KernelFormatError(path, text, "a count beyond 64 bits") from None
    if max(dense) > U64_MAX:
        raise KernelFormatError(path, text, "a count beyond 64 bits")
    return CpuCounts(len(dense), dense=dense)


def read_sys_irq(roots: KernelRoots, irq: int) -> SysIrq | None:
    """None when the IRQ descriptor does not exist (freed, or never allocated)."""
    base = f"{roots.sysfs}/kernel/irq/{irq}"
    chip = read_text(f"{base}/chip_name")
    if chip is None:
        return None
    hwirq = read_text(f"{base}/hwirq") or ""
    actions = read_text(f"{base}/actions") or ""
    text = (read_bytes(f"{base}/per_cpu_count") or b"").rstrip(b"\n")
    number = decimal(hwirq, 0, U64_MAX) if hwirq else None
    if hwirq and number is None:
        raise KernelFormatError(f"{base}/hwirq", hwirq, "expected a decimal number below 2^64")
    counts = _counts(f"{base}/per_cpu_count", text)
    # The kernel counts in an unsigned int per CPU: no real total comes near 64 bits,
    # and the API's total_count has no more.
    if counts.total > U64_MAX:
        raise KernelFormatError(f"{base}/per_cpu_count", _shown(text), "counts that add up beyond 64 bits")
    return SysIrq(irq, chip, number, tuple(filter(None, actions.split(","))), counts, read_text(f"{base}/type") or "")


class ProcIrq(NamedTuple):
    """/proc/irq/<irq>/ (kernel/irq/proc.c). Exists once a handler was ever requested. A named
    tuple for the reason SysIrq is one."""

    irq: int
    affinity: frozenset[int]
    effective_affinity: frozenset[int]
    node: int
    settable: bool
    reason: str  # why not settable; empty when settable


_NOT_SETTABLE = "the kernel manages this IRQ's affinity (smp_affinity_list is read-only)"


def read_proc_irq(roots: KernelRoots, irq: int) -> ProcIrq | None:
    """None when /proc/irq/<irq> does not exist (no handler was ever requested)."""
    base = f"{roots.procfs}/irq/{irq}"
    read = read_text_mode(f"{base}/smp_affinity_list")
    if read is None:
        return None
    text, mode = read
    # Since 6.12 proc.c makes smp_affinity(_list) 0444 when !irq_can_set_affinity_usr()
    # (managed, per-CPU or no-balancing IRQs, or a chip without irq_set_affinity).
    # Older kernels show 0644 for those too and refuse the write with EIO.
    settable = bool(mode & stat.S_IWUSR)
    node = decimal(read_text(f"{base}/node") or "-1", -1, S32_MAX)
    effective_text = read_text(f"{base}/effective_affinity_list")
    try:
        affinity = cpulist(text) if text else frozenset()
    except InvalidCpuList as err:
        raise KernelFormatError(f"{base}/smp_affinity_list", text, err.reason) from None
    try:
        effective = cpulist(effective_text) if effective_text else frozenset()
    except InvalidCpuList as err:
        raise KernelFormatError(f"{base}/effective_affinity_list", effective_text or "", err.reason) from None
    return ProcIrq(irq, affinity, effective, -1 if node is None else node, settable,
                   "" if settable else _NOT_SETTABLE)


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
