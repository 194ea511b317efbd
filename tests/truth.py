"""Independent readings of a kernel tree that tests compare msixd's answers against.

Deliberately not msixd code: /proc/interrupts is parsed here by whitespace, the
way an operator reads it, so a bug in msixd's sysfs readers cannot hide itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class InterruptLine:
    irq: int
    counts: tuple[int, ...]  # per online CPU
    chip: str
    hwirq_handler: str  # e.g. "3-edge"
    actions: str


def proc_interrupts(procfs: Path) -> dict[int, InterruptLine]:
    lines = (procfs / "interrupts").read_text().splitlines()
    ncpu = len(lines[0].split())
    table = {}
    for line in lines[1:]:
        label, _, rest = line.partition(":")
        if not label.strip().isdigit():
            continue
        fields = rest.split()
        counts = tuple(int(c) for c in fields[:ncpu])
        chip, hwirq_handler = fields[ncpu], fields[ncpu + 1]
        table[int(label)] = InterruptLine(int(label), counts, chip, hwirq_handler, " ".join(fields[ncpu + 2 :]))
    return table


def msix_devices(sysfs: Path) -> dict[str, int]:
    """BDF -> number of msi_irqs entries, for devices that have any."""
    out = {}
    for dev in sorted((sysfs / "bus/pci/devices").iterdir()):
        irqs = dev / "msi_irqs"
        if irqs.is_dir() and any(irqs.iterdir()):
            out[dev.name] = len(list(irqs.iterdir()))
    return out
