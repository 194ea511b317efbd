"""CPU lists ("0-3,8") as the kernel reads and writes them, and CPU masks ("ff,ffffffff").

Lists follow lib/bitmap-str.c bitmap_parselist: comma-separated CPUs and ranges,
with an optional ":used/group" stride ("0-15:2/4" means 0,1,4,5,8,9,12,13), as
isolcpus= and nohz_full= accept. Masks follow %*pb: hex digits in comma-separated
32-bit groups, most significant first, as irqbalance's "setup" answer prints its
banned CPUs (irqbalance.c sock_handle()).
"""

from __future__ import annotations

from collections.abc import Iterable

from msixd.errors import InvalidCpuList, KernelFormatError, shown

# CONFIG_NR_CPUS is at most 8192 on every architecture today; a larger number
# is a typo or an attack, not a CPU.
MAX_CPUS = 8192


# UINT_MAX has 10 digits: lib/bitmap-str.c bitmap_getnum() refuses larger numbers
# with EOVERFLOW. Longer digit strings are refused before int() sees them (int()
# itself refuses more than 4300 digits, with a ValueError nobody expects).
_MAX_DIGITS = 10


def _number(text: str, whole: str, what: str) -> int:
    if not text.isdigit() or not text.isascii():
        raise InvalidCpuList(whole, f"{shown(text, 20)} is not {what}")
    if len(text) > _MAX_DIGITS:
        raise InvalidCpuList(whole, f"{text[:20]}... ({len(text)} digits) is too long to be {what}")
    return int(text)


def _cpu(text: str, whole: str) -> int:
    cpu = _number(text, whole, "a CPU number")
    if cpu >= MAX_CPUS:
        raise InvalidCpuList(whole, f"CPU {cpu} is beyond the largest possible CPU ({MAX_CPUS - 1})")
    return cpu


def _span(first: int, last: int, used: int, group: int) -> int:
    """CPUs first..last, the first `used` of every `group`, as a bitmask.

    The pattern is doubled until it covers the range: a few big-integer
    operations per item, however many CPUs it names, so a long list of wide
    items costs little.
    """
    width = last - first + 1
    pattern, period = (1 << used) - 1, group
    while period < width:
        pattern |= pattern << period
        period *= 2
    return (pattern & ((1 << width) - 1)) << first


def parse_cpulist(text: str) -> frozenset[int]:
    """Parse a CPU list; the empty string is the empty set. Raises InvalidCpuList."""
    whole = text
    text = text.strip()
    if text.isdigit():  # one CPU, what most IRQ affinities are (_cpu checks the rest)
        return frozenset((_cpu(text, whole),))
    if not text:
        return frozenset()
    mask = 0
    single = "," not in text
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise InvalidCpuList(whole, "empty item")
        span, _, stride = item.partition(":")
        first_text, dash, last_text = span.partition("-")
        first = _cpu(first_text, whole)
        last = _cpu(last_text, whole) if dash else first
        if last < first:
            raise InvalidCpuList(whole, f"range {shown(span)} is reversed")
        used = group = 1
        if stride:
            used_text, slash, group_text = stride.partition("/")
            if not slash:
                raise InvalidCpuList(whole, f"stride {shown(stride)} is not used/group")
            used = _number(used_text, whole, "a stride's used/group")
            group = _number(group_text, whole, "a stride's used/group")
            if used == 0 or group == 0 or used > group:
                raise InvalidCpuList(whole, f"stride {shown(stride)} needs 0 < used <= group")
        if not stride and single:  # one plain range, the other common shape: "0-63"
            return frozenset(range(first, last + 1))
        mask |= _span(first, last, used, group)
    bits = bin(mask)[:1:-1]  # least significant first
    return frozenset(cpu for cpu, bit in enumerate(bits) if bit == "1")


def parse_kernel_cpulist(path: str, text: str) -> frozenset[int]:
    """parse_cpulist for text the kernel wrote in path: a malformed list is the kernel's
    fault, so it raises KernelFormatError naming the file, not InvalidCpuList."""
    try:
        return parse_cpulist(text)
    except InvalidCpuList as err:
        raise KernelFormatError(path, text, err.reason) from None


def format_cpulist(cpus: Iterable[int]) -> str:
    """Compact list, "0-3,8,10-11", as %*pbl prints it."""
    ordered = sorted(set(cpus))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def parse_cpumask(text: str) -> frozenset[int]:
    """Parse a hex mask with optional comma-separated 32-bit groups. Raises InvalidCpuList."""
    whole = text
    groups = text.strip().split(",")
    if len(groups) > MAX_CPUS // 32:
        raise InvalidCpuList(whole, f"mask of {len(groups)} 32-bit groups names CPUs beyond {MAX_CPUS - 1}")
    value = 0
    for group in groups:
        if not group or len(group) > 8:
            raise InvalidCpuList(whole, "each comma-separated group holds 1 to 8 hex digits")
        try:
            value = (value << 32) | int(group, 16)
        except ValueError:
            raise InvalidCpuList(whole, f"{shown(group)} is not hexadecimal") from None
    if value.bit_length() > MAX_CPUS:
        raise InvalidCpuList(whole, f"mask names CPUs beyond {MAX_CPUS - 1}")
    return frozenset(bit for bit in range(value.bit_length()) if value >> bit & 1)
